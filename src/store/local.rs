//! The local directory backend: temp file, fsync, then a no-overwrite link into place.

use std::io::ErrorKind;
use std::path::{Path, PathBuf};

use async_trait::async_trait;
use tokio::fs::{self, File};
use tokio::io::AsyncWriteExt;

use super::{BackupStore, ObjectInfo, ObjectReader, ObjectWriter};
use crate::error::{Error, Result};

/// Temporary files live beside their destination, named so that `list` skips them.
const TMP_MARK: &str = ".tmp-";

pub struct LocalStore {
    root: PathBuf,
}

impl LocalStore {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        LocalStore { root: root.into() }
    }

    fn path(&self, key: &str) -> Result<PathBuf> {
        if key.is_empty()
            || key
                .split('/')
                .any(|part| part.is_empty() || part == "." || part == "..")
        {
            return Err(Error::failed("resolve", key, "not a valid object key"));
        }
        Ok(self.root.join(key))
    }

    fn resource(&self, key: &str) -> String {
        self.root.join(key).display().to_string()
    }

    /// Every file under the root, temporary ones included, with its key and metadata.
    async fn files(&self) -> Result<Vec<(PathBuf, String, std::fs::Metadata)>> {
        let mut out = Vec::new();
        let mut pending = vec![self.root.clone()];
        while let Some(dir) = pending.pop() {
            let mut entries = match fs::read_dir(&dir).await {
                Ok(entries) => entries,
                Err(e) if e.kind() == ErrorKind::NotFound => continue,
                Err(e) => return Err(Error::failed("list", dir.display().to_string(), e)),
            };
            while let Some(entry) = entries
                .next_entry()
                .await
                .map_err(|e| Error::failed("list", dir.display().to_string(), e))?
            {
                let path = entry.path();
                let meta = entry
                    .metadata()
                    .await
                    .map_err(|e| Error::failed("stat", path.display().to_string(), e))?;
                if meta.is_dir() {
                    pending.push(path);
                } else if let Some(key) = relative_key(&self.root, &path) {
                    out.push((path, key, meta));
                }
            }
        }
        Ok(out)
    }
}

#[async_trait]
impl BackupStore for LocalStore {
    fn describe(&self) -> String {
        self.root.display().to_string()
    }

    async fn create(&self, key: &str) -> Result<Box<dyn ObjectWriter>> {
        let path = self.path(key)?;
        if fs::try_exists(&path).await.unwrap_or(false) {
            return Err(Error::failed(
                "create",
                self.resource(key),
                "object exists already; objects are never overwritten",
            ));
        }
        let dir = path.parent().unwrap_or(&self.root).to_path_buf();
        fs::create_dir_all(&dir)
            .await
            .map_err(|e| Error::failed("create directory", dir.display().to_string(), e))?;
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let tmp = dir.join(format!("{TMP_MARK}{}-{name}", unique_suffix()));
        let file = File::create(&tmp)
            .await
            .map_err(|e| Error::failed("create", tmp.display().to_string(), e))?;
        Ok(Box::new(LocalWriter {
            file: Some(file),
            tmp,
            path,
            size: 0,
        }))
    }

    async fn open(&self, key: &str) -> Result<ObjectReader> {
        let path = self.path(key)?;
        match File::open(&path).await {
            Ok(file) => Ok(Box::pin(tokio::io::BufReader::with_capacity(1 << 20, file))),
            Err(e) => Err(Error::failed("open", self.resource(key), e)),
        }
    }

    async fn exists(&self, key: &str) -> Result<bool> {
        let path = self.path(key)?;
        fs::try_exists(&path)
            .await
            .map_err(|e| Error::failed("stat", self.resource(key), e))
    }

    async fn collect_abandoned_writes(
        &self,
        prefix: &str,
        older_than: std::time::Duration,
    ) -> Result<Vec<String>> {
        let now = std::time::SystemTime::now();
        let mut removed = Vec::new();
        for (path, key, meta) in self.files().await? {
            let old = meta
                .modified()
                .ok()
                .and_then(|m| now.duration_since(m).ok())
                .is_some_and(|age| age > older_than);
            if is_temporary(&path) && key.starts_with(prefix) && old {
                match fs::remove_file(&path).await {
                    Ok(()) => removed.push(path.display().to_string()),
                    Err(e) if e.kind() == ErrorKind::NotFound => {}
                    Err(e) => return Err(Error::failed("delete", path.display().to_string(), e)),
                }
            }
        }
        Ok(removed)
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>> {
        let mut out: Vec<ObjectInfo> = self
            .files()
            .await?
            .into_iter()
            .filter(|(path, key, _)| !is_temporary(path) && key.starts_with(prefix))
            .map(|(_, key, meta)| ObjectInfo {
                key,
                size: meta.len(),
            })
            .collect();
        out.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(out)
    }

    async fn modified(&self, key: &str) -> Result<Option<chrono::DateTime<chrono::Utc>>> {
        let path = self.path(key)?;
        let meta = fs::metadata(&path)
            .await
            .map_err(|e| Error::failed("stat", self.resource(key), e))?;
        Ok(meta.modified().ok().map(chrono::DateTime::from))
    }

    async fn delete(&self, key: &str) -> Result<()> {
        let path = self.path(key)?;
        match fs::remove_file(&path).await {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(Error::failed("delete", self.resource(key), e)),
        }
        // Remove directories left empty, up to the root; a non-empty one stops the walk.
        let mut dir = path.parent().map(Path::to_path_buf);
        while let Some(d) = dir {
            if d == self.root || fs::remove_dir(&d).await.is_err() {
                break;
            }
            dir = d.parent().map(Path::to_path_buf);
        }
        Ok(())
    }
}

/// A writer's temporary file: not an object until it is renamed.
fn is_temporary(path: &Path) -> bool {
    path.file_name()
        .is_some_and(|n| n.to_string_lossy().starts_with(TMP_MARK))
}

fn relative_key(root: &Path, path: &Path) -> Option<String> {
    let rel = path.strip_prefix(root).ok()?;
    let parts: Option<Vec<&str>> = rel.components().map(|c| c.as_os_str().to_str()).collect();
    Some(parts?.join("/"))
}

fn unique_suffix() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!("{}-{nanos}", std::process::id())
}

struct LocalWriter {
    file: Option<File>,
    tmp: PathBuf,
    path: PathBuf,
    size: u64,
}

#[async_trait]
impl ObjectWriter for LocalWriter {
    async fn write(&mut self, chunk: &[u8]) -> Result<()> {
        let file = self.file.as_mut().ok_or_else(|| {
            Error::failed("write", self.tmp.display().to_string(), "writer is closed")
        })?;
        file.write_all(chunk)
            .await
            .map_err(|e| Error::failed("write", self.tmp.display().to_string(), e))?;
        self.size += chunk.len() as u64;
        Ok(())
    }

    async fn finish(mut self: Box<Self>) -> Result<u64> {
        let tmp = self.tmp.clone();
        let result = async {
            if let Some(mut file) = self.file.take() {
                file.flush().await?;
                file.sync_all().await?;
            }
            // A hard link fails when the destination exists: never overwrite.
            fs::hard_link(&tmp, &self.path).await?;
            fs::remove_file(&tmp).await?;
            if let Some(dir) = self.path.parent() {
                File::open(dir).await?.sync_all().await?;
            }
            Ok::<_, std::io::Error>(())
        }
        .await;
        match result {
            Ok(()) => Ok(self.size),
            Err(e) => {
                let _ = fs::remove_file(&tmp).await;
                Err(Error::failed("finish", self.path.display().to_string(), e))
            }
        }
    }

    async fn abort(mut self: Box<Self>) -> Result<()> {
        self.file.take();
        match fs::remove_file(&self.tmp).await {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::failed("abort", self.tmp.display().to_string(), e)),
        }
    }
}

impl Drop for LocalWriter {
    /// A writer dropped without finish (an error, a cancelled task) leaves no temp file.
    fn drop(&mut self) {
        if self.file.is_some() {
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}
