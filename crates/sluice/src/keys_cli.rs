//! `sluice keys create|list|revoke`: manage API keys straight in the configured database,
//! with no server running (how the first admin key is made). The same operations as
//! `/api-keys`; running servers see a change within a second.

use crate::cli::{KeysArgs, KeysCommand};
use crate::operations::keys::{self, NewKey};
use anyhow::Context;

pub async fn run(args: KeysArgs) -> anyhow::Result<()> {
    let store = sluice_store::connect(&args.database_url, 2)
        .await
        .with_context(|| {
            format!(
                "cannot open the database at {}",
                sluice_store::redact_url(&args.database_url)
            )
        })?;
    store.migrate().await.context("cannot apply migrations")?;
    let store = store.as_ref();
    match args.command {
        KeysCommand::Create { name, scopes, json } => {
            let new = NewKey::new(&name, &scopes).map_err(|details| {
                let problems: Vec<String> = details.iter().map(|d| d.to_string()).collect();
                anyhow::anyhow!("invalid key: {}", problems.join("; "))
            })?;
            let created = keys::create(store, &new).await.map_err(api_error)?;
            if json {
                println!("{}", serde_json::to_string(&created)?);
            } else {
                println!("{}", created.key);
                eprintln!(
                    "created key {} '{}' ({}); it is not stored and will not be shown again",
                    created.id,
                    created.name,
                    scope_list(&created.scopes)
                );
            }
        }
        KeysCommand::List { json } => {
            let list = keys::list(store).await.map_err(api_error)?;
            if json {
                println!("{}", serde_json::to_string(&list)?);
            } else {
                println!(
                    "{:>5}  {:<24} {:<12} {:<18} {:<20} status",
                    "id", "name", "prefix", "scopes", "last used"
                );
                for key in list.data {
                    let last_used = key
                        .last_used_at
                        .map(|t| t.format("%Y-%m-%d %H:%M:%S").to_string())
                        .unwrap_or_else(|| "never".to_owned());
                    let status = match key.revoked_at {
                        Some(at) => format!("revoked {}", at.format("%Y-%m-%d %H:%M:%S")),
                        None => "active".to_owned(),
                    };
                    println!(
                        "{:>5}  {:<24} {:<12} {:<18} {:<20} {status}",
                        key.id,
                        key.name,
                        key.prefix,
                        scope_list(&key.scopes),
                        last_used
                    );
                }
            }
        }
        KeysCommand::Revoke { id } => {
            let revoked = keys::revoke(store, id, None).await.map_err(api_error)?;
            eprintln!("revoked key {} '{}'", revoked.id, revoked.name);
            if args.operational_events {
                let at = revoked.revoked_at.unwrap_or_else(chrono::Utc::now);
                crate::operational::store_key_revoked(
                    store,
                    revoked.id,
                    &revoked.name,
                    &revoked.prefix,
                    at,
                )
                .await
                .context("the key is revoked, but its sluice.key.revoked event was not stored")?;
            }
        }
    }
    Ok(())
}

fn scope_list(scopes: &[crate::auth::Scope]) -> String {
    scopes
        .iter()
        .map(|s| s.as_str())
        .collect::<Vec<_>>()
        .join(",")
}

fn api_error(error: crate::error::ApiError) -> anyhow::Error {
    anyhow::anyhow!("{}", error.message)
}
