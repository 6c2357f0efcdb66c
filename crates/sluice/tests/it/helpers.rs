//! `spawn_app()`: a real sluice on port 0 with a fresh database per test, on either backend.

use serde_json::Value;
use sluice::app::{Roles, RunningApp};
use sluice::config::Settings;
use sqlx::Connection;
use std::net::SocketAddr;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Db {
    Sqlite,
    Postgres,
}

/// Where the test PostgreSQL server is; each test gets its own database on it.
pub fn postgres_server_url() -> String {
    std::env::var("SLUICE_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".to_owned())
}

pub struct TestApp {
    pub addr: SocketAddr,
    pub client: reqwest::Client,
    pub db: Db,
    #[allow(dead_code)] // used by worker tests that open a second process on the same database
    pub database_url: String,
    app: Option<RunningApp>,
    _sqlite_dir: Option<tempfile::TempDir>,
    postgres_db: Option<String>,
}

/// A test database: a temporary SQLite file, or a new PostgreSQL database. `None` when
/// PostgreSQL is unreachable outside CI (in CI — `CI=true` — that is a failure instead).
pub async fn fresh_database(db: Db) -> Option<(String, Option<tempfile::TempDir>, Option<String>)> {
    match db {
        Db::Sqlite => {
            let dir = tempfile::tempdir().expect("temp dir");
            let url = format!("sqlite://{}", dir.path().join("sluice.db").display());
            Some((url, Some(dir), None))
        }
        Db::Postgres => {
            let server = postgres_server_url();
            let mut admin = match sqlx::PgConnection::connect(&format!("{server}/postgres")).await {
                Ok(conn) => conn,
                Err(error) => {
                    if std::env::var("CI").is_ok_and(|v| v == "true" || v == "1") {
                        panic!("PostgreSQL is required in CI but unreachable at {server}: {error}");
                    }
                    eprintln!("skipping: PostgreSQL unreachable at {server}: {error}");
                    return None;
                }
            };
            let name = format!("sluice_test_{}", uuid::Uuid::new_v4().simple());
            sqlx::query(&format!("CREATE DATABASE {name}"))
                .execute(&mut admin)
                .await
                .expect("create test database");
            Some((format!("{server}/{name}"), None, Some(name)))
        }
    }
}

pub async fn spawn_app(db: Db) -> Option<TestApp> {
    spawn_app_with(db, &[]).await
}

/// Starts sluice with extra flags (e.g. `["--max-attempts", "2"]`).
pub async fn spawn_app_with(db: Db, extra: &[&str]) -> Option<TestApp> {
    let (database_url, sqlite_dir, postgres_db) = fresh_database(db).await?;
    let mut args = vec![
        "--database-url".to_owned(),
        database_url.clone(),
        "--port".to_owned(),
        "0".to_owned(),
        "--host".to_owned(),
        "127.0.0.1".to_owned(),
    ];
    args.extend(extra.iter().map(|s| (*s).to_owned()));
    let settings = Settings::from_args(args).expect("test settings parse");
    let app = RunningApp::start(settings, Roles::SERVE).await.expect("sluice starts");
    Some(TestApp {
        addr: app.addr.expect("serve listens"),
        client: reqwest::Client::new(),
        db,
        database_url,
        app: Some(app),
        _sqlite_dir: sqlite_dir,
        postgres_db,
    })
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.client.get(self.url(path)).send().await.expect("GET")
    }

    pub async fn get_json(&self, path: &str) -> (u16, Value) {
        let response = self.get(path).await;
        let status = response.status().as_u16();
        (status, response.json().await.expect("JSON body"))
    }

    pub async fn post_json(&self, path: &str, body: &Value) -> reqwest::Response {
        self.client
            .post(self.url(path))
            .json(body)
            .send()
            .await
            .expect("POST")
    }

    /// POSTs and returns status and JSON body.
    pub async fn post(&self, path: &str, body: &Value) -> (u16, Value) {
        let response = self.post_json(path, body).await;
        let status = response.status().as_u16();
        (status, response.json().await.expect("JSON body"))
    }

    pub async fn post_raw(
        &self,
        path: &str,
        content_type: Option<&str>,
        body: Vec<u8>,
    ) -> (u16, Value) {
        let mut request = self.client.post(self.url(path)).body(body);
        if let Some(content_type) = content_type {
            request = request.header("content-type", content_type);
        }
        let response = request.send().await.expect("POST");
        let status = response.status().as_u16();
        (status, response.json().await.expect("JSON body"))
    }

    pub async fn stop(mut self) {
        if let Some(app) = self.app.take() {
            app.stop().await.expect("clean stop");
        }
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        let Some(name) = self.postgres_db.take() else {
            return;
        };
        // Drop the database from a separate thread: Drop cannot await, and the test's runtime
        // may be shutting down.
        let server = postgres_server_url();
        let _ = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build();
            if let Ok(runtime) = runtime {
                runtime.block_on(async {
                    if let Ok(mut admin) =
                        sqlx::PgConnection::connect(&format!("{server}/postgres")).await
                    {
                        let _ =
                            sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                                .execute(&mut admin)
                                .await;
                    }
                });
            }
        })
        .join();
    }
}

/// Runs a story against both backends: `story!(name)` expects `async fn name(app: TestApp)`.
#[macro_export]
macro_rules! story {
    ($name:ident) => {
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                let app = $crate::helpers::spawn_app($crate::helpers::Db::Sqlite)
                    .await
                    .expect("sqlite always works");
                super::$name(app).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                if let Some(app) = $crate::helpers::spawn_app($crate::helpers::Db::Postgres).await {
                    super::$name(app).await;
                }
            }
        }
    };
}
