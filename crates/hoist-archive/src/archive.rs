use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use crate::layout::{self, Members};
use crate::{
    ArchiveError, ArchiveFormat, Compression, Image, Layer, LayerHasher, SliceReader, TarEntry, TarIndex, Wrapper,
};

/// An opened seekable archive: the header index and the images found in it.
#[derive(Debug)]
pub struct Archive {
    path: PathBuf,
    file: Arc<File>,
    format: ArchiveFormat,
    images: Vec<Image>,
}

struct FileMembers<'a> {
    path: &'a Path,
    file: &'a Arc<File>,
    index: &'a TarIndex,
}

impl Members for FileMembers<'_> {
    fn label(&self) -> &Path {
        self.path
    }

    fn index(&self) -> &TarIndex {
        self.index
    }

    fn small(&self, _name: &str, entry: &TarEntry) -> Result<Vec<u8>, ArchiveError> {
        let mut bytes = Vec::with_capacity(entry.size as usize);
        SliceReader::new(Arc::clone(self.file), entry.offset, entry.size)
            .read_to_end(&mut bytes)
            .map_err(|e| ArchiveError::io(self.path, e))?;
        Ok(bytes)
    }

    fn compression(&self, _name: &str, entry: &TarEntry) -> Result<Compression, ArchiveError> {
        let mut magic = [0u8; 4];
        let mut reader = SliceReader::new(Arc::clone(self.file), entry.offset, entry.size.min(4));
        let mut filled = 0;
        while filled < magic.len() {
            match reader.read(&mut magic[filled..]).map_err(|e| ArchiveError::io(self.path, e))? {
                0 => break,
                n => filled += n,
            }
        }
        Ok(Compression::sniff(&magic[..filled]))
    }
}

impl Archive {
    /// Opens a seekable plain tar, indexes its headers and finds its images.
    /// A compressed archive is refused with [`ArchiveError::Compressed`]: read
    /// those with [`crate::read_stream`].
    pub fn open(path: impl AsRef<Path>) -> Result<Self, ArchiveError> {
        let path = path.as_ref();
        let mut file = File::open(path).map_err(|e| ArchiveError::io(path, e))?;
        let len = file.metadata().map_err(|e| ArchiveError::io(path, e))?.len();
        if len == 0 {
            return Err(ArchiveError::Empty { path: path.to_owned() });
        }
        let wrapper = Wrapper::sniff_file(&mut file).map_err(|e| ArchiveError::io(path, e))?;
        if wrapper != Wrapper::None {
            return Err(ArchiveError::Compressed { path: path.to_owned(), compression: wrapper.name() });
        }
        file.seek(SeekFrom::Start(0)).map_err(|e| ArchiveError::io(path, e))?;
        // Each seek over a body empties the buffer: a small one reads little past each header.
        let index = TarIndex::build(std::io::BufReader::with_capacity(8 * 1024, &mut file), path, len)
            .map_err(|e| crate::sniff::refine_file(e, &mut file))?;
        let file = Arc::new(file);
        let (format, images) = layout::discover(&FileMembers { path, file: &file, index: &index })?;
        Ok(Self { path: path.to_owned(), file, format, images })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn format(&self) -> ArchiveFormat {
        self.format
    }

    pub fn images(&self) -> &[Image] {
        &self.images
    }

    /// A reader over the stored bytes of `layer` (compressed if the archive
    /// stores it compressed). Readers are independent: use many at once.
    pub fn layer_reader(&self, layer: &Layer) -> SliceReader {
        SliceReader::new(Arc::clone(&self.file), layer.offset, layer.size)
    }

    fn verify_with(&self, hasher: &mut LayerHasher, layer: &Layer) -> Result<(), ArchiveError> {
        let found = hasher.hash(self.layer_reader(layer), layer.compression).map_err(|e| ArchiveError::LayerRead {
            path: self.path.clone(),
            entry: layer.entry.clone(),
            source: e,
        })?;
        found.check(&self.path, layer)
    }

    /// Verifies every distinct layer of every image, `jobs` layers at once.
    /// Returns the first failure; the others stop at their next layer.
    pub fn verify(&self, jobs: usize) -> Result<(), ArchiveError> {
        let mut layers: Vec<&Layer> = Vec::new();
        for layer in self.images.iter().flat_map(|i| &i.layers) {
            if !layers.iter().any(|l| l.entry == layer.entry) {
                layers.push(layer);
            }
        }
        let next = AtomicUsize::new(0);
        let first_error: Mutex<Option<ArchiveError>> = Mutex::new(None);
        let failed = || first_error.lock().unwrap_or_else(PoisonError::into_inner).is_some();
        std::thread::scope(|scope| {
            for _ in 0..jobs.clamp(1, layers.len().max(1)) {
                scope.spawn(|| {
                    let mut hasher = LayerHasher::default();
                    while let Some(layer) = layers.get(next.fetch_add(1, Ordering::Relaxed)) {
                        if failed() {
                            break;
                        }
                        if let Err(error) = self.verify_with(&mut hasher, layer) {
                            first_error.lock().unwrap_or_else(PoisonError::into_inner).get_or_insert(error);
                            break;
                        }
                    }
                });
            }
        });
        match first_error.into_inner().unwrap_or_else(PoisonError::into_inner) {
            Some(error) => Err(error),
            None => Ok(()),
        }
    }
}
