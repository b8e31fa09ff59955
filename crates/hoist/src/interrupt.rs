//! SIGINT and SIGTERM, as a future a command can race its work against.

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
