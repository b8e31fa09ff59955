use std::io::Write;

use hoist_archive::Archive;

use crate::cli::InspectArgs;

pub(crate) fn exec(args: &InspectArgs) -> anyhow::Result<()> {
    let archive = Archive::open(&args.archive)?;
    let mut out = std::io::stdout().lock();
    if args.json {
        let images: Vec<_> = archive
            .images()
            .iter()
            .map(|image| {
                serde_json::json!({
                    "tags": image.tags,
                    "config": image.config.digest.to_string(),
                    "platform": image.platform.to_string(),
                    "layers": image.layers.iter().map(|l| serde_json::json!({
                        "diff_id": l.diff_id.to_string(),
                        "size": l.size,
                        "compression": l.compression.name(),
                    })).collect::<Vec<_>>(),
                })
            })
            .collect();
        let document = serde_json::json!({ "format": archive.format().name(), "images": images });
        serde_json::to_writer_pretty(&mut out, &document)?;
        writeln!(out)?;
        return Ok(());
    }
    writeln!(out, "format: {}", archive.format())?;
    for (number, image) in archive.images().iter().enumerate() {
        let tags = if image.tags.is_empty() { "<untagged>".to_owned() } else { image.tags.join(", ") };
        writeln!(out, "\nimage {}: {tags}", number + 1)?;
        writeln!(out, "  platform: {}", image.platform)?;
        writeln!(out, "  config:   {}", image.config.digest)?;
        writeln!(out, "  {:<3} {:<71} {:>12}  COMPRESSION", "#", "DIFF ID", "SIZE")?;
        for (i, layer) in image.layers.iter().enumerate() {
            writeln!(out, "  {:<3} {:<71} {:>12}  {}", i + 1, layer.diff_id, layer.size, layer.compression.name())?;
        }
    }
    Ok(())
}
