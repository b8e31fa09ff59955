use hoist_oci::ManifestFormat;
use hoist_transfer::PushOptions;

use crate::cli::ServeArgs;
use crate::serve::{self, ServeConfig};

pub(crate) async fn exec(args: ServeArgs) -> anyhow::Result<()> {
    let registries =
        args.registries.iter().map(|r| crate::commands::push::registry_target(r)).collect::<Result<Vec<_>, _>>()?;
    let config = ServeConfig {
        registries,
        connection: crate::commands::push::connection(&args.connection),
        options: PushOptions {
            jobs: usize::from(args.jobs),
            format: ManifestFormat::Docker,
            compression: args.compression,
            recompress: false,
            // A shared service keeps no blob cache: every upload proves its own layers.
            cache_dir: None,
            chunk_size: args.chunk_size,
        },
        max_size: (args.max_size > 0).then_some(args.max_size),
        max_uploads: usize::from(args.max_uploads),
        idle_timeout: args.idle_timeout,
        shutdown_grace: args.shutdown_grace,
        public_names: args.public_names.clone(),
        provision: args.provision.clone(),
    };
    // Said at start, not on every upload.
    config.options.validate()?;
    let tls = args.tls_cert.as_deref().zip(args.tls_key.as_deref());
    serve::run(config, &args.listen, tls).await
}
