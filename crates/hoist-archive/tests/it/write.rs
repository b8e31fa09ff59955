//! The archive writer against the readers: what it writes, the seekable
//! reader and the one-pass stream reader both read back as the same images,
//! digests and diff_ids, and `--verify` passes.

use std::collections::HashMap;
use std::io::Write;

use hoist_archive::write::{ArchiveBuilder, ArchiveKind, ArchivePlan, Content, DockerImage, TarWriter};
use hoist_archive::{Archive, HashingVisitor, Image, read_stream};
use hoist_oci::document::{ANNOTATION_CONTAINERD_NAME, ANNOTATION_REF_NAME};
use hoist_oci::{Compression, Descriptor, Digest, IndexEntry, ManifestBuilder, ManifestFormat, RawBlob, media_type};
use hoist_testkit::fixtures::{ImageFixture, gzip, layer_tar, zstd};

/// An image as a registry holds it: manifest, config, stored layer blobs.
struct Pulled {
    manifest: RawBlob,
    config: RawBlob,
    layers: Vec<(Descriptor, Vec<u8>)>,
}

fn pulled(fixture: &ImageFixture, format: ManifestFormat, compression: Compression) -> Pulled {
    let config = RawBlob::new(format.config_media_type(), fixture.config());
    let mut builder = ManifestBuilder::new(format, config.descriptor());
    let mut layers = Vec::new();
    for tar in &fixture.layers {
        let (bytes, media) = match compression {
            Compression::Gzip => (gzip(tar), format.layer_media_type(true)),
            Compression::Zstd => (zstd(tar), media_type::OCI_LAYER_ZSTD),
            Compression::None => (tar.clone(), format.layer_media_type(false)),
        };
        let descriptor = Descriptor { media_type: media.into(), digest: Digest::of(&bytes), size: bytes.len() as u64 };
        builder = builder.layer(descriptor.clone());
        layers.push((descriptor, bytes));
    }
    Pulled { manifest: builder.build(), config, layers }
}

fn add(builder: &mut ArchiveBuilder, image: &Pulled, name: Option<&str>) {
    builder.document(&image.manifest).document(&image.config);
    for (descriptor, _) in &image.layers {
        builder.blob(descriptor);
    }
    let mut entry = IndexEntry::new(image.manifest.descriptor());
    if let Some(name) = name {
        entry.annotations.insert(ANNOTATION_CONTAINERD_NAME.into(), name.into());
        entry.annotations.insert(ANNOTATION_REF_NAME.into(), name.rsplit(':').next().unwrap().into());
    }
    builder.root(entry);
    builder.docker_image(DockerImage {
        config: image.config.digest.clone(),
        layers: image.layers.iter().map(|(d, _)| d.digest.clone()).collect(),
        repo_tags: name.map(str::to_owned).into_iter().collect(),
    });
}

/// Writes `plan` front to back, blob bytes looked up by digest.
fn write_sequentially(plan: &ArchivePlan, blobs: &HashMap<Digest, Vec<u8>>) -> Vec<u8> {
    let mut writer = TarWriter::new(Vec::new());
    for entry in plan.entries() {
        writer.begin(entry).unwrap();
        if let Content::Blob(digest) = &entry.content {
            // In uneven pieces, as downloads deliver them.
            for piece in blobs[digest].chunks(1000) {
                writer.write_all(piece).unwrap();
            }
            writer.end().unwrap();
        }
    }
    assert_eq!(writer.written() + 1024, plan.total_size());
    writer.finish().unwrap()
}

fn blobs_of(images: &[&Pulled]) -> HashMap<Digest, Vec<u8>> {
    images.iter().flat_map(|i| &i.layers).map(|(d, b)| (d.digest.clone(), b.clone())).collect()
}

/// Reads `bytes` both ways, verifying every layer; the images must agree.
fn read_back(bytes: &[u8]) -> Vec<Image> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("pulled.tar");
    std::fs::write(&path, bytes).unwrap();
    let archive = Archive::open(&path).unwrap();
    archive.verify(2).unwrap();
    let mut hashing = HashingVisitor::default();
    let streamed = read_stream(bytes, "-", &mut hashing).unwrap();
    streamed.verify(&hashing.hashes).unwrap();
    assert_eq!(archive.format(), streamed.format());
    assert_eq!(archive.images().len(), streamed.images().len());
    for (a, b) in archive.images().iter().zip(streamed.images()) {
        assert_eq!(a.config, b.config);
        assert_eq!(a.tags, b.tags);
        assert_eq!(a.manifest, b.manifest);
    }
    archive.images().to_vec()
}

fn check(image: &Image, original: &Pulled, fixture: &ImageFixture) {
    assert_eq!(image.config, original.config, "the config, byte for byte");
    assert_eq!(image.manifest.as_ref().unwrap().digest, original.manifest.digest, "the manifest, unchanged");
    let diff_ids: Vec<String> = image.layers.iter().map(|l| l.diff_id.to_string()).collect();
    assert_eq!(diff_ids, fixture.diff_ids());
    for (layer, (descriptor, _)) in image.layers.iter().zip(&original.layers) {
        assert_eq!(layer.digest.as_ref(), Some(&descriptor.digest), "the stored blob keeps its digest");
        assert_eq!(layer.size, descriptor.size);
    }
}

#[test]
fn docker_archives_read_back_through_both_readers_with_tags() {
    let shared = layer_tar(&[("etc/shared", b"both images have this layer")]);
    let a = ImageFixture::new().layer(shared.clone()).layer(layer_tar(&[("a", b"a")]));
    let b = ImageFixture::new().layer(shared).layer(layer_tar(&[("b", b"b")]));
    let pa = pulled(&a, ManifestFormat::Docker, Compression::Gzip);
    let pb = pulled(&b, ManifestFormat::Oci, Compression::Gzip);
    let mut builder = ArchiveBuilder::new(ArchiveKind::Docker);
    add(&mut builder, &pa, Some("127.0.0.1:5000/team/a:1"));
    add(&mut builder, &pb, Some("b:latest"));
    let plan = builder.plan();
    let shared_blobs =
        plan.entries().iter().filter(|e| e.name == format!("blobs/sha256/{}", pa.layers[0].0.digest.hex()));
    assert_eq!(shared_blobs.count(), 1, "a shared layer is stored once");
    let names: Vec<&str> = plan.entries().iter().map(|e| e.name.as_str()).collect();
    assert_eq!(names[..3], ["oci-layout", "blobs/", "blobs/sha256/"]);
    assert_eq!(
        names[names.len() - 3..],
        ["index.json", "manifest.json", "repositories"],
        "what names the blobs comes last"
    );

    let bytes = write_sequentially(&plan, &blobs_of(&[&pa, &pb]));
    assert_eq!(bytes.len() as u64, plan.total_size());
    let images = read_back(&bytes);
    assert_eq!(images.len(), 2);
    assert_eq!(images[0].tags, ["127.0.0.1:5000/team/a:1"]);
    assert_eq!(images[1].tags, ["b:latest"]);
    check(&images[0], &pa, &a);
    check(&images[1], &pb, &b);

    // What `docker load` reads: manifest.json and repositories.
    let mut tar = tar::Archive::new(&bytes[..]);
    let mut files = HashMap::new();
    for entry in tar.entries().unwrap() {
        let mut entry = entry.unwrap();
        let name = entry.path().unwrap().to_string_lossy().into_owned();
        let mut content = Vec::new();
        std::io::Read::read_to_end(&mut entry, &mut content).unwrap();
        files.insert(name, content);
    }
    let manifest: serde_json::Value = serde_json::from_slice(&files["manifest.json"]).unwrap();
    assert_eq!(manifest[0]["Config"], format!("blobs/sha256/{}", pa.config.digest.hex()));
    assert_eq!(manifest[0]["RepoTags"][0], "127.0.0.1:5000/team/a:1");
    assert_eq!(manifest[1]["Layers"][1], format!("blobs/sha256/{}", pb.layers[1].0.digest.hex()));
    let repositories: serde_json::Value = serde_json::from_slice(&files["repositories"]).unwrap();
    assert_eq!(repositories["127.0.0.1:5000/team/a"]["1"], pa.layers[1].0.digest.hex());
    assert_eq!(repositories["b"]["latest"], pb.layers[1].0.digest.hex());
}

#[test]
fn oci_archives_keep_manifests_and_zstd_layers() {
    let fixture = ImageFixture::new().layer(layer_tar(&[("z", b"zstd layer")])).layer(layer_tar(&[("p", b"plain")]));
    let image = pulled(&fixture, ManifestFormat::Oci, Compression::Zstd);
    let mut builder = ArchiveBuilder::new(ArchiveKind::Oci);
    add(&mut builder, &image, Some("registry.example/x/y:2"));
    let plan = builder.plan();
    assert!(!plan.entries().iter().any(|e| e.name == "manifest.json"), "a pure OCI layout");
    let bytes = write_sequentially(&plan, &blobs_of(&[&image]));
    let images = read_back(&bytes);
    assert_eq!(images[0].tags, ["registry.example/x/y:2"]);
    assert_eq!(images[0].layers[0].compression, Compression::Zstd);
    check(&images[0], &image, &fixture);
}

#[test]
fn an_untagged_image_with_no_layers_reads_back() {
    let fixture = ImageFixture::new();
    let image = pulled(&fixture, ManifestFormat::Docker, Compression::Gzip);
    let mut builder = ArchiveBuilder::new(ArchiveKind::Docker);
    add(&mut builder, &image, None);
    let bytes = write_sequentially(&builder.plan(), &HashMap::new());
    let images = read_back(&bytes);
    assert!(images[0].tags.is_empty());
    assert!(images[0].layers.is_empty());
}

#[test]
fn a_file_written_by_position_equals_the_stream() {
    use std::os::unix::fs::FileExt;
    let fixture = ImageFixture::new().layer(layer_tar(&[("a", &[7u8; 5000])])).layer(layer_tar(&[("b", b"b")]));
    let image = pulled(&fixture, ManifestFormat::Docker, Compression::Gzip);
    let mut builder = ArchiveBuilder::new(ArchiveKind::Docker);
    add(&mut builder, &image, Some("app:1"));
    let plan = builder.plan();
    let blobs = blobs_of(&[&image]);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("positional.tar");
    let file = std::fs::File::create(&path).unwrap();
    plan.write_frame(&file).unwrap();
    // Blobs in reverse order: places do not depend on order.
    for entry in plan.entries().iter().rev() {
        if let Content::Blob(digest) = &entry.content {
            file.write_all_at(&blobs[digest], entry.data_offset()).unwrap();
        }
    }
    drop(file);
    assert_eq!(std::fs::read(&path).unwrap(), write_sequentially(&plan, &blobs));
}

#[test]
fn the_writer_refuses_entries_of_the_wrong_size() {
    let fixture = ImageFixture::new().layer(layer_tar(&[("a", b"a")]));
    let image = pulled(&fixture, ManifestFormat::Docker, Compression::Gzip);
    let mut builder = ArchiveBuilder::new(ArchiveKind::Docker);
    add(&mut builder, &image, Some("app:1"));
    let plan = builder.plan();
    let blob = plan.entries().iter().find(|e| matches!(e.content, Content::Blob(_))).unwrap();
    let mut writer = TarWriter::new(Vec::new());
    for entry in plan.entries() {
        if entry == blob {
            break;
        }
        writer.begin(entry).unwrap();
    }
    writer.begin(blob).unwrap();
    assert!(writer.write_all(&vec![0u8; blob.size as usize + 1]).is_err(), "too long");
    writer.write_all(&vec![0u8; blob.size as usize - 1]).unwrap();
    assert!(writer.end().is_err(), "too short");
}
