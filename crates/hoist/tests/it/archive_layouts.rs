//! Every archive layout, read by `hoist inspect` from a file, from standard
//! input, and wrapped in gzip (and zstd and xz): each must yield the images
//! the fixture holds, and `--verify` must pass.

use std::process::Command;

use hoist_testkit::fixtures::{
    DockerArchive, DockerSaveClassic, DockerSaveOci, ImageFixture, LayerCompression, OciArchive, TarWriter, gzip,
    layer_tar, xz, zstd,
};
use hoist_testkit::tools::{require_docker, run, run_ok};
use serde_json::Value;

use crate::support::{Run, hoist, path_str};

/// How the archive reaches hoist.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Input {
    File,
    Stdin,
    Gzip,
    Zstd,
    Xz,
}

pub(crate) const EVERY_INPUT: [Input; 5] = [Input::File, Input::Stdin, Input::Gzip, Input::Zstd, Input::Xz];
/// What each layout is read through; zstd and xz wrappers share gzip's code path past the decoder.
const USUAL_INPUTS: [Input; 3] = [Input::File, Input::Stdin, Input::Gzip];

/// `hoist inspect ARGS… <archive>` with the archive given as `input`.
pub(crate) fn inspect(archive: &[u8], input: Input, args: &[&str]) -> Run {
    let dir = tempfile::tempdir().unwrap();
    let (name, bytes) = match input {
        Input::File | Input::Stdin => ("archive.tar", archive.to_vec()),
        Input::Gzip => ("archive.tar.gz", gzip(archive)),
        Input::Zstd => ("archive.tar.zst", zstd(archive)),
        Input::Xz => ("archive.tar.xz", xz(archive)),
    };
    let path = dir.path().join(name);
    std::fs::write(&path, bytes).unwrap();
    let mut command = hoist();
    command.arg("inspect").args(args);
    if let Input::Stdin = input {
        command.arg("-").stdin(std::fs::File::open(&path).unwrap());
    } else {
        command.arg(path_str(&path));
    }
    crate::support::run(&mut command)
}

/// What one image of the JSON output must say.
struct Expect<'a> {
    tags: &'a [&'a str],
    image: &'a ImageFixture,
    compression: LayerCompression,
}

fn expect<'a>(tags: &'a [&'a str], image: &'a ImageFixture) -> Expect<'a> {
    Expect { tags, image, compression: LayerCompression::None }
}

fn check_json(run: &Run, format: &str, expected: &[Expect<'_>], context: &str) {
    run.success();
    let value: Value = serde_json::from_str(&run.stdout).unwrap_or_else(|e| panic!("{context}: {e}: {}", run.stdout));
    assert_eq!(value["format"], format, "{context}");
    let images = value["images"].as_array().expect("images");
    assert_eq!(images.len(), expected.len(), "{context}: {}", run.stdout);
    for (got, want) in images.iter().zip(expected) {
        let tags: Vec<&str> = got["tags"].as_array().unwrap().iter().map(|t| t.as_str().unwrap()).collect();
        assert_eq!(tags, want.tags, "{context}");
        assert_eq!(got["config"], want.image.config_digest(), "{context}");
        assert_eq!(got["platform"], "linux/amd64", "{context}");
        let layers = got["layers"].as_array().unwrap();
        let diff_ids: Vec<&str> = layers.iter().map(|l| l["diff_id"].as_str().unwrap()).collect();
        assert_eq!(diff_ids, want.image.diff_ids(), "{context}");
        for (layer, tar) in layers.iter().zip(&want.image.layers) {
            assert_eq!(layer["compression"], want.compression.name(), "{context}");
            assert_eq!(layer["size"], want.compression.apply(tar).len(), "{context}");
        }
    }
}

/// Reads `archive` every way in `inputs`, with `--verify`, and checks the images.
fn check_layout(archive: &[u8], inputs: &[Input], format: &str, expected: &[Expect<'_>]) {
    for &input in inputs {
        let run = inspect(archive, input, &["--json", "--verify"]);
        check_json(&run, format, expected, &format!("{format} from {input:?}"));
    }
}

fn app() -> ImageFixture {
    ImageFixture::new()
        .tag("app:1")
        .tag("registry.example/team/app:1.0")
        .layer(layer_tar(&[("etc/app.conf", b"port=80\n")]))
        .layer(layer_tar(&[("bin/app", b"#!/bin/sh\necho app\n")]))
}

/// Three images: two sharing a layer (one lists it twice), one with no layers.
fn family() -> [ImageFixture; 3] {
    let base = layer_tar(&[("etc/os-release", b"ID=hoist\n")]);
    let web = ImageFixture::new().tag("web:1").layer(base.clone()).layer(layer_tar(&[("srv/index.html", b"hi")]));
    let twice = ImageFixture::new().tag("twice:1").layer(base.clone()).layer(layer_tar(&[("x", b"x")])).layer(base);
    let empty = ImageFixture::new().tag("scratch:1");
    [web, twice, empty]
}

#[test]
fn classic_docker_save_with_several_tags() {
    let image = app();
    let archive = DockerSaveClassic::new().image(image.clone()).build();
    check_layout(
        &archive,
        &EVERY_INPUT,
        "docker-save-classic",
        &[expect(&["app:1", "registry.example/team/app:1.0"], &image)],
    );
}

#[test]
fn classic_docker_save_with_shared_repeated_and_no_layers() {
    let [web, twice, empty] = family();
    let archive = DockerSaveClassic::new().image(web.clone()).image(twice.clone()).image(empty.clone()).build();
    let expected = [expect(&["web:1"], &web), expect(&["twice:1"], &twice), expect(&["scratch:1"], &empty)];
    check_layout(&archive, &USUAL_INPUTS, "docker-save-classic", &expected);
}

#[test]
fn classic_docker_save_with_dot_slash_names_and_hard_links() {
    let [web, twice, _] = family();
    let archive = DockerSaveClassic::new().image(web.clone()).image(twice.clone()).dot_slash().hard_links().build();
    check_layout(
        &archive,
        &USUAL_INPUTS,
        "docker-save-classic",
        &[expect(&["web:1"], &web), expect(&["twice:1"], &twice)],
    );
}

#[test]
fn docker_25_save_with_plain_gzip_and_zstd_layers() {
    let [web, twice, empty] = family();
    let untagged = ImageFixture { tags: Vec::new(), ..app() };
    for compression in [LayerCompression::None, LayerCompression::Gzip, LayerCompression::Zstd] {
        let archive = DockerSaveOci::new()
            .image(web.clone())
            .image(twice.clone())
            .image(empty.clone())
            .image(untagged.clone())
            .compression(compression)
            .build();
        let expected = [
            Expect { tags: &["web:1"], image: &web, compression },
            Expect { tags: &["twice:1"], image: &twice, compression },
            Expect { tags: &["scratch:1"], image: &empty, compression },
            Expect { tags: &[], image: &untagged, compression },
        ];
        check_layout(&archive, &USUAL_INPUTS, "docker-save-oci", &expected);
    }
}

#[test]
fn docker_25_save_with_several_tags_dot_slash_and_an_absent_platform() {
    let image = app();
    let archive = DockerSaveOci::new()
        .image(image.clone())
        .compression(LayerCompression::Gzip)
        .multi_platform()
        .dot_slash()
        .build();
    let expected = [Expect {
        tags: &["app:1", "registry.example/team/app:1.0"],
        image: &image,
        compression: LayerCompression::Gzip,
    }];
    check_layout(&archive, &EVERY_INPUT, "docker-save-oci", &expected);
}

#[test]
fn docker_25_save_keeps_the_original_manifest_digest() {
    let image = app();
    let archive = DockerSaveOci::new().image(image).compression(LayerCompression::Zstd).build();
    let run = inspect(&archive, Input::File, &[]);
    run.success();
    let manifest_line = run.stdout.lines().find(|l| l.trim_start().starts_with("manifest:")).expect("manifest line");
    let digest = manifest_line.split_whitespace().last().unwrap();
    let hex = digest.strip_prefix("sha256:").unwrap();
    // The manifest hoist reports is a blob of the archive, named by its digest.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a.tar");
    std::fs::write(&path, &archive).unwrap();
    let listing = run_ok(Command::new("tar").arg("-tf").arg(&path));
    assert!(listing.lines().any(|l| l == format!("blobs/sha256/{hex}")), "{digest} not among:\n{listing}");
}

#[test]
fn containers_image_docker_archive_with_several_images() {
    let [web, twice, empty] = family();
    let archive = DockerArchive::new().image(web.clone()).image(twice.clone()).image(empty.clone()).build();
    let expected = [expect(&["web:1"], &web), expect(&["twice:1"], &twice), expect(&["scratch:1"], &empty)];
    check_layout(&archive, &EVERY_INPUT, "docker-archive", &expected);
    let dotted = DockerArchive::new().image(web.clone()).dot_slash().build();
    check_layout(&dotted, &USUAL_INPUTS, "docker-archive", &[expect(&["web:1"], &web)]);
}

#[test]
fn pure_oci_layout_with_full_reference_names() {
    let [web, twice, empty] = family();
    let archive = OciArchive::new()
        .image(web.clone())
        .image(twice.clone())
        .image(empty.clone())
        .compression(LayerCompression::Gzip)
        .build();
    let expected = [
        Expect { tags: &["web:1"], image: &web, compression: LayerCompression::Gzip },
        Expect { tags: &["twice:1"], image: &twice, compression: LayerCompression::Gzip },
        Expect { tags: &["scratch:1"], image: &empty, compression: LayerCompression::Gzip },
    ];
    check_layout(&archive, &EVERY_INPUT, "oci-layout", &expected);
}

#[test]
fn pure_oci_layout_with_bare_ref_names_shows_them_but_has_no_tags() {
    let image = app();
    let archive = OciArchive::new().image(image.clone()).bare_ref_names().dot_slash().build();
    let untagged = ImageFixture { tags: Vec::new(), ..image };
    check_layout(&archive, &USUAL_INPUTS, "oci-layout", &[expect(&[], &untagged)]);
    let run = inspect(&archive, Input::Stdin, &[]);
    run.success();
    assert!(run.stdout.contains("ref name: 1, 1.0"), "{}", run.stdout);
    assert!(run.stdout.contains("<untagged>"), "{}", run.stdout);
}

#[test]
fn a_layer_reached_through_a_symlink_chain_is_read() {
    let layer = layer_tar(&[("a", b"a")]);
    let image = ImageFixture::new().tag("chain:1").layer(layer.clone());
    let mut tar = TarWriter::new();
    tar.file("store/real.tar", &layer);
    tar.symlink("hop/one.tar", "../store/real.tar");
    tar.symlink("l/top.tar", "/hop/one.tar");
    tar.file("cfg.json", &image.config());
    tar.file("manifest.json", br#"[{"Config":"cfg.json","RepoTags":["chain:1"],"Layers":["l/top.tar"]}]"#);
    check_layout(&tar.finish(), &USUAL_INPUTS, "docker-archive", &[expect(&["chain:1"], &image)]);
}

// ---- genuine archives from this machine's Docker Engine ----

/// A tiny root filesystem for `docker import`.
fn rootfs(marker: &str) -> Vec<u8> {
    let mut tar = TarWriter::new();
    tar.dir("etc");
    tar.file("etc/marker", marker.as_bytes());
    tar.finish()
}

/// Images created in the engine for one test, removed on drop.
struct EngineImages(Vec<String>);

impl Drop for EngineImages {
    fn drop(&mut self) {
        let _ = run(Command::new("docker").arg("rmi").arg("-f").args(&self.0));
    }
}

fn unique(name: &str) -> String {
    static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!("hoist-it/{name}:{}-{n}", std::process::id())
}

fn docker_import(rootfs: &[u8], name: &str, change: &str) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("rootfs.tar");
    std::fs::write(&path, rootfs).unwrap();
    run_ok(Command::new("docker").args(["import", "--change", change, path_str(&path), name]));
}

fn engine_view(name: &str) -> (String, Vec<String>) {
    let id = run_ok(Command::new("docker").args(["image", "inspect", "--format", "{{.Id}}", name]));
    let layers = run_ok(Command::new("docker").args(["image", "inspect", "--format", "{{json .RootFS.Layers}}", name]));
    (id.trim().to_owned(), serde_json::from_str(&layers).unwrap())
}

fn docker_save(names: &[&str]) -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("saved.tar");
    run_ok(Command::new("docker").args(["save", "-o", path_str(&path)]).args(names));
    std::fs::read(&path).unwrap()
}

/// Checks inspect's JSON for a genuine save against what the engine says.
fn check_against_engine(archive: &[u8], images: &[(&[&str], &str)]) {
    for input in USUAL_INPUTS {
        let run = inspect(archive, input, &["--json", "--verify"]);
        run.success();
        let value: Value = serde_json::from_str(&run.stdout).unwrap();
        let format = value["format"].as_str().unwrap();
        assert!(format.starts_with("docker-save"), "{format}");
        let got = value["images"].as_array().unwrap();
        assert_eq!(got.len(), images.len(), "{input:?}: {}", run.stdout);
        for (tags, name) in images {
            let (id, layers) = engine_view(name);
            let image =
                got.iter().find(|i| i["config"] == id.as_str()).unwrap_or_else(|| panic!("{id} in {}", run.stdout));
            let mut got_tags: Vec<&str> =
                image["tags"].as_array().unwrap().iter().map(|t| t.as_str().unwrap()).collect();
            got_tags.sort_unstable();
            let mut want_tags = tags.to_vec();
            want_tags.sort_unstable();
            assert_eq!(got_tags, want_tags, "{input:?}");
            let diff_ids: Vec<&str> =
                image["layers"].as_array().unwrap().iter().map(|l| l["diff_id"].as_str().unwrap()).collect();
            assert_eq!(diff_ids, layers, "{input:?}");
        }
    }
}

#[test]
fn genuine_docker_save_of_one_image_with_two_tags() {
    require_docker();
    let (first, second) = (unique("one"), unique("one-alias"));
    let _cleanup = EngineImages(vec![first.clone(), second.clone()]);
    docker_import(&rootfs("one"), &first, "ENV A=1");
    run_ok(Command::new("docker").args(["tag", &first, &second]));
    let archive = docker_save(&[&first, &second]);
    check_against_engine(&archive, &[(&[first.as_str(), second.as_str()], &first)]);
}

#[test]
fn genuine_docker_save_of_two_images_sharing_a_layer() {
    require_docker();
    let (a, b) = (unique("shared-a"), unique("shared-b"));
    let _cleanup = EngineImages(vec![a.clone(), b.clone()]);
    let fs = rootfs("shared");
    docker_import(&fs, &a, "ENV WHICH=a");
    docker_import(&fs, &b, "ENV WHICH=b");
    let archive = docker_save(&[&a, &b]);
    check_against_engine(&archive, &[(&[a.as_str()], &a), (&[b.as_str()], &b)]);
}

/// The new layouts are not only listed but pushed whole: skopeo verifies every
/// blob digest while copying, and each layer gunzips to its diff_id.
#[test]
fn docker_25_and_oci_layout_archives_push_whole() {
    use hoist_testkit::{TestRegistry, tools};
    let registry = TestRegistry::start();
    let image = app();
    let archives = [
        ("docker25", DockerSaveOci::new().image(image.clone()).compression(LayerCompression::Gzip).build()),
        ("docker25-plain", DockerSaveOci::new().image(image.clone()).multi_platform().build()),
        ("oci", OciArchive::new().image(image.clone()).bare_ref_names().build()),
    ];
    for (name, archive) in archives {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("archive.tar");
        std::fs::write(&path, archive).unwrap();
        let reference = format!("{}/layouts/{name}:1", registry.host());
        crate::support::hoist_run(&["push", path_str(&path), &reference]).success();
        let copy = tempfile::tempdir().unwrap();
        tools::skopeo_copy_to_dir(&reference, copy.path());
        let manifest: Value =
            serde_json::from_slice(&std::fs::read(copy.path().join("manifest.json")).unwrap()).unwrap();
        assert_eq!(manifest["config"]["digest"], image.config_digest(), "{name}");
        let layers = manifest["layers"].as_array().unwrap();
        assert_eq!(layers.len(), image.layers.len(), "{name}");
        for (layer, diff_id) in layers.iter().zip(image.diff_ids()) {
            let blob = copy.path().join(layer["digest"].as_str().unwrap().trim_start_matches("sha256:"));
            assert_eq!(tools::gunzip_sha256(&blob), diff_id, "{name}");
        }
    }
}

/// Genuine containers/image archives: skopeo writes a `docker-archive` and an
/// `oci-archive` of an image hoist pushed; hoist must read both back to the
/// same config and diff_ids.
#[test]
fn genuine_skopeo_docker_archive_and_oci_archive() {
    use hoist_testkit::{TestRegistry, tools};
    tools::require("skopeo", "skopeo");
    let registry = TestRegistry::start();
    let image = ImageFixture { tags: vec!["app:1".into()], ..app() };
    let dir = tempfile::tempdir().unwrap();
    let source = dir.path().join("source.tar");
    DockerSaveClassic::new().image(image.clone()).write_to(&source);
    let reference = format!("{}/genuine/app:1", registry.host());
    crate::support::hoist_run(&["push", path_str(&source), &reference]).success();
    for (transport, format) in [("docker-archive", "docker-archive"), ("oci-archive", "oci-layout")] {
        let path = dir.path().join(format!("{transport}.tar"));
        run_ok(Command::new("skopeo").args([
            "copy",
            "--src-tls-verify=false",
            &format!("docker://{reference}"),
            &format!("{transport}:{}:app:1", path.display()),
        ]));
        let archive = std::fs::read(&path).unwrap();
        // skopeo re-serialises the config when it converts to OCI: ask it which config it wrote.
        let raw = run_ok(Command::new("skopeo").args(["inspect", "--raw", &format!("{transport}:{}", path.display())]));
        let manifest: Value = serde_json::from_str(&raw).unwrap();
        let config = manifest["config"]["digest"].as_str().unwrap();
        for input in USUAL_INPUTS {
            let run = inspect(&archive, input, &["--json", "--verify"]);
            run.success();
            let value: Value = serde_json::from_str(&run.stdout).unwrap();
            assert_eq!(value["format"], format, "{transport} {input:?}");
            let got = &value["images"][0];
            assert_eq!(value["images"].as_array().unwrap().len(), 1, "{transport} {input:?}");
            assert_eq!(got["config"], config, "{transport} {input:?}");
            let diff_ids: Vec<&str> =
                got["layers"].as_array().unwrap().iter().map(|l| l["diff_id"].as_str().unwrap()).collect();
            assert_eq!(diff_ids, image.diff_ids(), "{transport} {input:?}");
            // skopeo 1.9 writes RepoTags in full (`docker.io/library/app:1`); both name the same image.
            let tag = got["tags"][0].as_str().unwrap_or_default();
            assert!(["app:1", "docker.io/library/app:1"].contains(&tag), "{transport} {input:?}: {}", run.stdout);
        }
    }
}

/// Many loose small files beside the image (more than the streaming pass's
/// 64 MiB budget for kept members) are skipped, not kept.
#[test]
fn loose_files_beside_the_image_are_not_kept_while_streaming() {
    let image = ImageFixture::new().tag("app:1").layer(layer_tar(&[("a", b"a")]));
    let mut tar = TarWriter::new();
    let filler = vec![b'x'; 60 * 1024];
    for i in 0..1200 {
        tar.file(&format!("share/doc/file-{i}.txt"), &filler);
    }
    let archive = DockerSaveClassic::new().image(image.clone()).build();
    // The loose files come first, then the image's entries.
    let mut combined = tar.finish();
    combined.truncate(combined.len() - 1024); // drop the end-of-archive blocks
    combined.extend_from_slice(&archive);
    check_layout(&combined, &[Input::Stdin], "docker-save-classic", &[expect(&["app:1"], &image)]);
}
