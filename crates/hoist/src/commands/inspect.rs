use std::io::Write;
use std::path::Path;

use hoist_archive::{
    Archive, ArchiveFormat, ArchiveInput, HashingVisitor, Image, LayerVisitor, SkipBlobs, Wrapper, read_stream,
};

use crate::cli::InspectArgs;

/// What inspect shows, whichever way the archive was read.
struct Found {
    format: ArchiveFormat,
    wrapper: Wrapper,
    images: Vec<Image>,
}

pub(crate) fn exec(args: &InspectArgs) -> anyhow::Result<()> {
    let found = read(&args.archive, args.verify)?;
    let mut out = std::io::stdout().lock();
    if args.json {
        let images: Vec<_> = found
            .images
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
        let mut document = serde_json::json!({ "format": found.format.name(), "images": images });
        if args.verify {
            document["verified"] = serde_json::Value::Bool(true);
        }
        serde_json::to_writer_pretty(&mut out, &document)?;
        writeln!(out)?;
        return Ok(());
    }
    match found.wrapper {
        Wrapper::None => writeln!(out, "format: {}", found.format)?,
        wrapper => writeln!(out, "format: {} ({}-compressed)", found.format, wrapper.name())?,
    }
    for (number, image) in found.images.iter().enumerate() {
        let tags = if image.tags.is_empty() { "<untagged>".to_owned() } else { image.tags.join(", ") };
        writeln!(out, "\nimage {}: {tags}", number + 1)?;
        if !image.ref_names.is_empty() {
            writeln!(out, "  ref name: {}", image.ref_names.join(", "))?;
        }
        writeln!(out, "  platform: {}", image.platform)?;
        writeln!(out, "  config:   {}", image.config.digest)?;
        if let Some(manifest) = &image.manifest {
            writeln!(out, "  manifest: {}", manifest.digest)?;
        }
        writeln!(out, "  {:<3} {:<71} {:>12}  COMPRESSION", "#", "DIFF ID", "SIZE")?;
        for (i, layer) in image.layers.iter().enumerate() {
            writeln!(out, "  {:<3} {:<71} {:>12}  {}", i + 1, layer.diff_id, layer.size, layer.compression.name())?;
        }
    }
    if args.verify {
        let layers = found.images.iter().map(|i| i.layers.len()).sum::<usize>();
        writeln!(out, "\nverified: every layer ({layers}) matches its diff_id")?;
    }
    Ok(())
}

/// A seekable plain tar is indexed and read by position; standard input and
/// wrapped archives take one streaming pass.
fn read(path: &Path, verify: bool) -> anyhow::Result<Found> {
    let path = match ArchiveInput::open(path) {
        ArchiveInput::Stream { reader, label } => return stream(reader, &label, verify),
        ArchiveInput::Seekable(path) => path,
    };
    let archive = Archive::open(&path)?;
    if verify {
        let jobs = std::thread::available_parallelism().map_or(2, std::num::NonZero::get);
        archive.verify(jobs)?;
    }
    Ok(Found { format: archive.format(), wrapper: Wrapper::None, images: archive.images().to_vec() })
}

fn stream(input: impl std::io::Read, label: &Path, verify: bool) -> anyhow::Result<Found> {
    let mut hashing = HashingVisitor::default();
    let visitor: &mut dyn LayerVisitor = if verify { &mut hashing } else { &mut SkipBlobs };
    let archive = read_stream(input, label, visitor)?;
    if verify {
        archive.verify(&hashing.hashes)?;
    }
    Ok(Found { format: archive.format(), wrapper: archive.wrapper(), images: archive.images().to_vec() })
}
