//! SIGINT and SIGTERM, as a future a command can race its work against.

use hoist_transfer::PushRun;

use crate::failure::Interrupted;

/// Resolves with the signal's name when SIGINT (Ctrl-C) or SIGTERM arrives.
/// If the handlers cannot be installed it never resolves: the default
/// action (ending the process) then still applies.
pub(crate) async fn signal() -> &'static str {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut interrupt), Ok(mut terminate)) = (signal(SignalKind::interrupt()), signal(SignalKind::terminate()))
    else {
        return std::future::pending().await;
    };
    tokio::select! {
        _ = interrupt.recv() => "SIGINT",
        _ = terminate.recv() => "SIGTERM",
    }
}

/// Runs `work` until it ends or a signal comes. On a signal the run is told
/// to stop (its reads fail at once), the work is dropped, its open upload
/// sessions are cancelled and its staging removed, and the error is an
/// [`Interrupted`] saying so, with `hint` (what to do next).
pub(crate) async fn interruptible<T>(
    run: &PushRun,
    work: impl Future<Output = anyhow::Result<T>>,
    hint: &'static str,
) -> anyhow::Result<T> {
    let signal = tokio::select! {
        outcome = work => return outcome,
        signal = signal() => {
            run.interrupt();
            signal
        }
    };
    let open = run.uploads().len();
    run.clean_up().await;
    let cleaned = match open {
        0 => "no upload was open".to_owned(),
        1 => "cancelled the upload that was open".to_owned(),
        n => format!("cancelled the {n} uploads that were open"),
    };
    Err(Interrupted { signal, cleaned, hint }.into())
}
