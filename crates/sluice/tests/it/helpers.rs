//! `spawn_app()`: a real sluice on port 0 with a fresh database per test, on either backend.

use serde_json::Value;
pub use sluice::app::Roles;
use sluice::app::RunningApp;
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
    pub database_url: String,
    app: Option<RunningApp>,
    /// Dropped after the app (fields drop in order): the database outlives its last user.
    _database: Option<TestDatabase>,
}

/// A test database that is removed when this guard drops, however the test ends: a temporary
/// SQLite file, or a new PostgreSQL database.
pub struct TestDatabase {
    pub url: String,
    _sqlite_dir: Option<tempfile::TempDir>,
    postgres_db: Option<String>,
}

/// A fresh test database. `None` when PostgreSQL is unreachable outside CI (in CI —
/// `CI=true` — that is a failure instead).
pub async fn fresh_database(db: Db) -> Option<TestDatabase> {
    match db {
        Db::Sqlite => {
            let dir = tempfile::tempdir().expect("temp dir");
            let url = format!("sqlite://{}", dir.path().join("sluice.db").display());
            Some(TestDatabase {
                url,
                _sqlite_dir: Some(dir),
                postgres_db: None,
            })
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
            Some(TestDatabase {
                url: format!("{server}/{name}"),
                _sqlite_dir: None,
                postgres_db: Some(name),
            })
        }
    }
}

impl Drop for TestDatabase {
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

pub async fn spawn_app(db: Db) -> Option<TestApp> {
    spawn_app_with(db, &[]).await
}

/// Starts sluice with extra flags (e.g. `["--max-attempts", "2"]`).
pub async fn spawn_app_with(db: Db, extra: &[&str]) -> Option<TestApp> {
    let database = fresh_database(db).await?;
    let mut app = start(db, &database.url, extra, Roles::SERVE).await;
    app._database = Some(database);
    Some(app)
}

/// A sluice on a database the test keeps (a [`TestDatabase`]), for stories where the
/// database must outlive a process, e.g. a stop and a restart.
pub async fn start_on(db: Db, database_url: &str, extra: &[&str]) -> TestApp {
    start(db, database_url, extra, Roles::SERVE).await
}

/// A sluice with only the given roles on a database the test keeps.
pub async fn start_on_as(db: Db, database_url: &str, extra: &[&str], roles: Roles) -> TestApp {
    start(db, database_url, extra, roles).await
}

/// Another sluice on the same database as `other` (as a second process would be), with the
/// given roles. It does not own the database: dropping it leaves the database in place.
pub async fn spawn_sibling(other: &TestApp, extra: &[&str], roles: Roles) -> TestApp {
    start(other.db, &other.database_url, extra, roles).await
}

async fn start(db: Db, database_url: &str, extra: &[&str], roles: Roles) -> TestApp {
    let mut args = vec![
        "--database-url".to_owned(),
        database_url.to_owned(),
        "--port".to_owned(),
        "0".to_owned(),
        "--host".to_owned(),
        "127.0.0.1".to_owned(),
    ];
    args.extend(extra.iter().map(|s| (*s).to_owned()));
    let settings = Settings::from_args(args).expect("test settings parse");
    let app = RunningApp::start(settings, roles)
        .await
        .expect("sluice starts");
    TestApp {
        // A worker-only sibling has no API; its address is never used.
        addr: app
            .addr
            .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 9))),
        client: reqwest::Client::new(),
        db,
        database_url: database_url.to_owned(),
        app: Some(app),
        _database: None,
    }
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

    /// Polls `GET /events/stats` until `processed` reaches `count` (panics after 30 s).
    pub async fn wait_for_processed(&self, count: i64) -> Value {
        self.wait_for_stats(|stats| stats["processed"].as_i64() == Some(count))
            .await
    }

    /// Polls `GET /events/stats` until `done` holds (panics after 30 s).
    pub async fn wait_for_stats(&self, done: impl Fn(&Value) -> bool) -> Value {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        loop {
            let (_, stats) = self.get_json("/events/stats").await;
            if done(&stats) {
                return stats;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "timed out waiting; last stats {stats}"
            );
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }

    /// Polls `GET /events/{id}` until its state is one of `states` (panics after 30 s).
    pub async fn wait_for_state(&self, id: i64, states: &[&str]) -> Value {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        loop {
            let (_, event) = self.get_json(&format!("/events/{id}")).await;
            if states.iter().any(|s| event["state"] == *s) {
                return event;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "timed out waiting for {states:?}; last {event}"
            );
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }

    /// Posts one new event and polls until its state is one of `states`: its id, and the
    /// event as it then is.
    pub async fn ingest_until(&self, event: &Value, states: &[&str]) -> (i64, Value) {
        let (status, created) = self.post("/events", event).await;
        assert_eq!(status, 201, "{created}");
        let id = created["id"].as_i64().expect("a stored event has an id");
        (id, self.wait_for_state(id, states).await)
    }

    /// Attempts of an event, newest first.
    pub async fn attempts(&self, id: i64) -> Vec<Value> {
        let (status, body) = self.get_json(&format!("/events/{id}/attempts")).await;
        assert_eq!(status, 200, "{body}");
        body["data"].as_array().cloned().unwrap_or_default()
    }

    pub async fn put(&self, path: &str, body: &Value) -> (u16, Value) {
        let response = self
            .client
            .put(self.url(path))
            .json(body)
            .send()
            .await
            .expect("PUT");
        let status = response.status().as_u16();
        (status, response.json().await.expect("JSON body"))
    }

    pub async fn delete(&self, path: &str) -> (u16, Value) {
        let response = self
            .client
            .delete(self.url(path))
            .send()
            .await
            .expect("DELETE");
        let status = response.status().as_u16();
        (status, response.json().await.expect("JSON body"))
    }

    /// Creates an API key straight in the store (as `sluice keys create` does) and makes this
    /// process see it at once; returns the key.
    pub async fn create_key(&self, name: &str, scopes: &[&str]) -> String {
        let state = &self.app.as_ref().expect("running").state;
        let new = sluice::operations::keys::NewKey::new(name, scopes).expect("valid key");
        let created = sluice::operations::keys::create(state.store.as_ref(), &new)
            .await
            .expect("key created");
        if let Some(keys) = &state.keys {
            keys.reload().await.expect("keys reload");
        }
        created.key
    }

    /// A request with `Authorization: Bearer <key>`.
    pub fn with_key(
        &self,
        method: reqwest::Method,
        path: &str,
        key: &str,
    ) -> reqwest::RequestBuilder {
        self.client.request(method, self.url(path)).bearer_auth(key)
    }

    /// One number the database answers, e.g. `SELECT COUNT(*) FROM rule_executions`.
    pub async fn sql_number(&self, sql: &str) -> i64 {
        match self.db {
            Db::Postgres => {
                let mut conn = sqlx::PgConnection::connect(&self.database_url)
                    .await
                    .unwrap();
                sqlx::query_scalar(sql).fetch_one(&mut conn).await.unwrap()
            }
            Db::Sqlite => {
                let mut conn = sqlx::SqliteConnection::connect(&self.database_url)
                    .await
                    .unwrap();
                sqlx::query_scalar(sql).fetch_one(&mut conn).await.unwrap()
            }
        }
    }

    pub async fn stop(mut self) {
        if let Some(app) = self.app.take() {
            app.stop().await.expect("clean stop");
        }
    }
}

/// Runs a story against both backends: `story!(name)` expects `async fn name(app: TestApp)`;
/// `story!(name, "--flag", "value", …)` starts sluice with those flags.
#[macro_export]
macro_rules! story {
    ($name:ident $(, $flag:expr)* $(,)?) => {
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                let app = $crate::helpers::spawn_app_with($crate::helpers::Db::Sqlite, &[$($flag),*])
                    .await
                    .expect("sqlite always works");
                super::$name(app).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                if let Some(app) =
                    $crate::helpers::spawn_app_with($crate::helpers::Db::Postgres, &[$($flag),*]).await
                {
                    super::$name(app).await;
                }
            }
        }
    };
}

/// Sends a request and reads its JSON answer (`Null` for a body that is not JSON).
pub trait Answer {
    async fn answer(self) -> (u16, Value);
}

impl Answer for reqwest::RequestBuilder {
    async fn answer(self) -> (u16, Value) {
        let response = self.send().await.expect("request");
        let status = response.status().as_u16();
        let body = response.bytes().await.expect("body");
        (status, serde_json::from_slice(&body).unwrap_or(Value::Null))
    }
}
