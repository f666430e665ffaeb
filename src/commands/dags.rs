//! `mwaa-dr dags render`: the DR DAGs and the startup script, from the resolved configuration.

use serde::Serialize;

use crate::cli::DagsRenderArgs;
use crate::commands::dag_files::{Binary, render_files};
use crate::config::Config;
use crate::deploy::RenderedFile;
use crate::deploy::startup;
use crate::error::{Error, Result};
use crate::output;

#[derive(Serialize)]
struct RenderReport {
    out: String,
    files: Vec<String>,
    binary_sha256: String,
}

pub fn render(config: &Config, args: &DagsRenderArgs) -> Result<()> {
    let command = "dags render";
    let store = config.store(command)?;
    let binary = Binary {
        uri: &args.binary_uri,
        version: args.binary_version.as_deref(),
        sha256: args.binary_sha256.as_deref(),
        file: args.binary_file.as_deref(),
        install_path: &args.install_path,
    };
    let (files, binary_sha256) = render_files(config, &store.to_string(), &binary)?;
    if config.dry_run {
        return report(config, args, &files, binary_sha256);
    }
    let out = &args.out;
    std::fs::create_dir_all(out)
        .map_err(|e| Error::failed("create", out.display().to_string(), e))?;
    for file in &files {
        let path = out.join(&file.name);
        std::fs::write(&path, &file.contents)
            .map_err(|e| Error::failed("write", path.display().to_string(), e))?;
    }
    report(config, args, &files, binary_sha256)
}

fn report(
    config: &Config,
    args: &DagsRenderArgs,
    files: &[RenderedFile],
    binary_sha256: String,
) -> Result<()> {
    let doc = RenderReport {
        out: args.out.display().to_string(),
        files: files.iter().map(|f| f.name.clone()).collect(),
        binary_sha256,
    };
    let verb = if config.dry_run {
        "would write"
    } else {
        "wrote"
    };
    output::emit(config.output, &doc, || {
        format!(
            "{verb} {} into {}: upload the .py files to the DAGs folder and {} as the environment's startup script",
            doc.files.join(", "),
            doc.out,
            startup::FILE_NAME
        )
    });
    Ok(())
}
