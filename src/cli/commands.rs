//! The CLI's reads and writes: list, status (and `--watch`), approve and abort.

use std::io::{IsTerminal, Write};

use futures::StreamExt;
use kube::{
    Api, Client, ResourceExt,
    api::{ListParams, Patch, PatchParams},
    runtime::{WatchStreamExt, watcher},
};

use thiserror::Error;

use super::Gate;
use crate::api::Canary;

#[derive(Debug, Error)]
pub enum Error {
    #[error("reading or writing the Canary")]
    Kube(#[from] kube::Error),
    #[error("watching the Canary")]
    Watch(#[from] watcher::Error),
    /// The command was refused before anything was written (the message says why).
    #[error("{0}")]
    Refused(String),
    #[error("writing to the terminal")]
    Io(#[from] std::io::Error),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

fn canaries(client: &Client, namespace: Option<&str>) -> Api<Canary> {
    match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::default_namespaced(client.clone()),
    }
}

/// `serin list [-A]`.
pub async fn list(client: Client, namespace: Option<&str>, all: bool) -> Result<()> {
    let api: Api<Canary> = if all {
        Api::all(client)
    } else {
        canaries(&client, namespace)
    };
    let mut items = api.list(&ListParams::default()).await?.items;
    items.sort_by_key(|c| (c.namespace(), c.name_any()));
    println!("{}", super::list_header(all));
    for c in &items {
        println!("{}", super::list_line(c, all));
    }
    Ok(())
}

/// One line per change when not on a terminal (for logs and scripts).
pub fn watch_line(canary: &Canary) -> String {
    let s = canary.status.clone().unwrap_or_default();
    format!(
        "{} phase={} weight={} failedChecks={} revision={} waiting={} message={:?}",
        jiff::Timestamp::now().strftime("%H:%M:%S"),
        s.phase,
        s.canary_weight,
        s.failed_checks,
        s.last_applied_spec.as_deref().unwrap_or("-"),
        super::waits_for(canary).replace(' ', "_"),
        s.message.unwrap_or_default()
    )
}

/// `serin status NAME [--watch]`.
pub async fn status(
    client: Client,
    namespace: Option<&str>,
    name: &str,
    watch: bool,
) -> Result<()> {
    let api = canaries(&client, namespace);
    let terminal = std::io::stdout().is_terminal();
    if !watch {
        let canary = api.get(name).await?;
        for line in super::status_lines(&canary, terminal) {
            println!("{line}");
        }
        return Ok(());
    }
    let config = watcher::Config::default().fields(&format!("metadata.name={name}"));
    let mut stream = std::pin::pin!(watcher(api, config).applied_objects());
    let mut last = String::new();
    while let Some(canary) = stream.next().await {
        let canary = canary?;
        let mut out = std::io::stdout().lock();
        if terminal {
            let text = super::status_lines(&canary, true).join("\n");
            if text != last {
                // Clear the screen and draw again from the top.
                writeln!(out, "\x1b[2J\x1b[H{text}")?;
                last = text;
            }
        } else {
            let key = super::status_lines(&canary, false).join("\n");
            if key != last {
                writeln!(out, "{}", watch_line(&canary))?;
                last = key;
            }
        }
        out.flush()?;
    }
    Ok(())
}

/// `serin history NAME`.
pub async fn history(client: Client, namespace: Option<&str>, name: &str) -> Result<()> {
    let canary = canaries(&client, namespace).get(name).await?;
    for line in super::history_lines(&canary) {
        println!("{line}");
    }
    Ok(())
}

async fn annotate(api: &Api<Canary>, name: &str, key: &str, value: &str) -> Result<()> {
    let patch = serde_json::json!({"metadata": {"annotations": {key: value}}});
    api.patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await?;
    Ok(())
}

/// `serin approve NAME [--gate start|traffic|promotion] [--revision R]`.
pub async fn approve(
    client: Client,
    namespace: Option<&str>,
    name: &str,
    gate: Gate,
    revision: Option<&str>,
) -> Result<()> {
    let api = canaries(&client, namespace);
    let canary = api.get(name).await?;
    let (key, value) = super::approval(&canary, gate, revision).map_err(Error::Refused)?;
    annotate(&api, name, key, &value).await?;
    println!("{name}: {key}={value}");
    Ok(())
}

/// `serin abort NAME [--revision R]`.
pub async fn abort(
    client: Client,
    namespace: Option<&str>,
    name: &str,
    revision: Option<&str>,
) -> Result<()> {
    let api = canaries(&client, namespace);
    let canary = api.get(name).await?;
    let (key, value) = super::abort(&canary, revision).map_err(Error::Refused)?;
    annotate(&api, name, key, &value).await?;
    println!("{name}: {key}={value}");
    Ok(())
}
