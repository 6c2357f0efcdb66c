//! A small W3C WebDriver client over reqwest, enough to drive headless Chromium through
//! chromedriver: sessions, navigation, finding and clicking, typing, scripts, screenshots and
//! the browser's console log. Waiting helpers poll, because pages update live.

use base64::Engine;
use serde_json::{json, Value};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use tokio::process::{Child, Command};

/// How long a wait lasts before the test fails.
pub const PATIENCE: Duration = Duration::from_secs(30);
const ELEMENT_KEY: &str = "element-6066-11e4-a52e-4f735466cecf";

/// Where the browser and its driver are (Debian's `chromium` and `chromium-driver`).
fn executable(variable: &str, default: &str) -> Option<PathBuf> {
    let path = std::env::var_os(variable)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(default));
    path.exists().then_some(path)
}

/// A running chromedriver, stopped when dropped.
pub struct Driver {
    _process: Child,
    base: String,
    http: reqwest::Client,
    chromium: PathBuf,
}

impl Driver {
    /// Starts chromedriver, or `None` when Chromium is not installed outside CI (in CI —
    /// `CI=true` — that is a failure: `.ci/run` installs it).
    pub async fn start() -> Option<Driver> {
        let chromium = executable("CHROMIUM", "/usr/bin/chromium");
        let chromedriver = executable("CHROMEDRIVER", "/usr/bin/chromedriver");
        let (Some(chromium), Some(chromedriver)) = (chromium, chromedriver) else {
            if std::env::var("CI").is_ok_and(|v| v == "true" || v == "1") {
                panic!("chromium and chromedriver are required in CI (apt-get install chromium chromium-driver)");
            }
            eprintln!("skipping: chromium or chromedriver is not installed");
            return None;
        };
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let process = Command::new(chromedriver)
            .arg(format!("--port={port}"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("chromedriver starts");
        let driver = Driver {
            _process: process,
            base: format!("http://127.0.0.1:{port}"),
            http: reqwest::Client::new(),
            chromium,
        };
        let deadline = Instant::now() + PATIENCE;
        loop {
            let ready = driver
                .http
                .get(format!("{}/status", driver.base))
                .send()
                .await
                .ok()
                .map(|r| r.json::<Value>());
            if let Some(status) = ready {
                if status.await.is_ok_and(|s| s["value"]["ready"] == true) {
                    return Some(driver);
                }
            }
            assert!(Instant::now() < deadline, "chromedriver did not start");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// A new headless browser window of the given size.
    pub async fn session(&self, width: u32, height: u32) -> Session {
        let capabilities = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": self.chromium,
                "args": [
                    "--headless=new",
                    "--no-sandbox",
                    "--disable-gpu",
                    "--disable-dev-shm-usage",
                    "--hide-scrollbars",
                    "--force-device-scale-factor=1",
                    format!("--window-size={width},{height}"),
                ],
            },
            "goog:loggingPrefs": {"browser": "ALL"},
        }}});
        let answer: Value = self
            .http
            .post(format!("{}/session", self.base))
            .json(&capabilities)
            .send()
            .await
            .expect("new session")
            .json()
            .await
            .expect("session JSON");
        let id = answer["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no session: {answer}"));
        Session {
            http: self.http.clone(),
            url: format!("{}/session/{id}", self.base),
        }
    }
}

/// One browser window.
pub struct Session {
    http: reqwest::Client,
    url: String,
}

#[derive(Debug, Clone)]
pub struct Element(String);

impl Session {
    /// Sends a command; `Err` carries WebDriver's error name and message.
    async fn command(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value, String> {
        let mut request = self.http.request(method, format!("{}{path}", self.url));
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.map_err(|e| e.to_string())?;
        let ok = response.status().is_success();
        let answer: Value = response.json().await.map_err(|e| e.to_string())?;
        if ok {
            Ok(answer["value"].clone())
        } else {
            Err(format!(
                "{}: {}",
                answer["value"]["error"], answer["value"]["message"]
            ))
        }
    }

    async fn post(&self, path: &str, body: Value) -> Result<Value, String> {
        self.command(reqwest::Method::POST, path, Some(body)).await
    }

    async fn get(&self, path: &str) -> Result<Value, String> {
        self.command(reqwest::Method::GET, path, None).await
    }

    pub async fn goto(&self, url: &str) {
        self.post("/url", json!({ "url": url }))
            .await
            .expect("navigate");
    }

    pub async fn current_url(&self) -> String {
        self.get("/url")
            .await
            .expect("url")
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    pub async fn try_find(&self, css: &str) -> Option<Element> {
        let found = self
            .post("/element", json!({"using": "css selector", "value": css}))
            .await
            .ok()?;
        found[ELEMENT_KEY].as_str().map(|id| Element(id.to_owned()))
    }

    /// Waits for an element to exist.
    pub async fn find(&self, css: &str) -> Element {
        let deadline = Instant::now() + PATIENCE;
        loop {
            if let Some(element) = self.try_find(css).await {
                return element;
            }
            if Instant::now() > deadline {
                panic!(
                    "no element {css} on {}:\n{}",
                    self.current_url().await,
                    self.body_text().await
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub async fn text_of(&self, element: &Element) -> Option<String> {
        let text = self
            .get(&format!("/element/{}/text", element.0))
            .await
            .ok()?;
        text.as_str().map(str::to_owned)
    }

    /// Waits until the element's visible text satisfies `wanted`; returns the text.
    pub async fn wait_text(&self, css: &str, what: &str, wanted: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + PATIENCE;
        let mut last = None;
        loop {
            if let Some(element) = self.try_find(css).await {
                if let Some(text) = self.text_of(&element).await {
                    if wanted(&text) {
                        return text;
                    }
                    last = Some(text);
                }
            }
            if Instant::now() > deadline {
                panic!(
                    "{css} never showed {what} on {} (last text {last:?}):\n{}",
                    self.current_url().await,
                    self.body_text().await
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits until `css` shows text containing `needle`.
    pub async fn wait_contains(&self, css: &str, needle: &str) -> String {
        self.wait_text(css, needle, |text| text.contains(needle))
            .await
    }

    /// Clicks the element; live pages replace parts of themselves, so a stale element is
    /// looked up again.
    pub async fn click(&self, css: &str) {
        let mut tries = 0;
        loop {
            let element = self.find(css).await;
            match self
                .post(&format!("/element/{}/click", element.0), json!({}))
                .await
            {
                Ok(_) => return,
                Err(error) if error.contains("stale element") && tries < 20 => {
                    tries += 1;
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(error) => panic!("cannot click {css}: {error}"),
            }
        }
    }

    /// Replaces a field's content by typing, as a person would.
    pub async fn type_into(&self, css: &str, text: &str) {
        let element = self.find(css).await;
        self.post(&format!("/element/{}/clear", element.0), json!({}))
            .await
            .unwrap_or_else(|e| panic!("cannot clear {css}: {e}"));
        self.post(
            &format!("/element/{}/value", element.0),
            json!({ "text": text }),
        )
        .await
        .unwrap_or_else(|e| panic!("cannot type into {css}: {e}"));
    }

    pub async fn execute(&self, script: &str) -> Value {
        self.post("/execute/sync", json!({"script": script, "args": []}))
            .await
            .unwrap_or_else(|e| panic!("script failed: {e}"))
    }

    pub async fn body_text(&self) -> String {
        self.execute("return document.body ? document.body.innerText : ''")
            .await
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    /// A Chrome DevTools Protocol command, through chromedriver.
    pub async fn cdp(&self, command: &str, params: Value) -> Value {
        self.post(
            "/goog/cdp/execute",
            json!({"cmd": command, "params": params}),
        )
        .await
        .unwrap_or_else(|e| panic!("{command} failed: {e}"))
    }

    /// Lays pages out as a phone of this width would (touch, mobile viewport).
    pub async fn emulate_phone(&self, width: u32, height: u32) {
        self.cdp(
            "Emulation.setDeviceMetricsOverride",
            json!({"width": width, "height": height, "deviceScaleFactor": 2, "mobile": true}),
        )
        .await;
    }

    /// Saves a PNG of the whole page, not just what fits in the window.
    pub async fn screenshot(&self, path: &Path) {
        let shot = self
            .cdp(
                "Page.captureScreenshot",
                json!({"format": "png", "captureBeyondViewport": true}),
            )
            .await;
        let png = base64::engine::general_purpose::STANDARD
            .decode(shot["data"].as_str().unwrap_or_default())
            .expect("base64 PNG");
        std::fs::write(path, png).expect("write screenshot");
    }

    /// The browser console's messages since the last call (`None` if the driver cannot say).
    pub async fn console_log(&self) -> Option<Vec<Value>> {
        self.post("/se/log", json!({"type": "browser"}))
            .await
            .ok()
            .and_then(|v| v.as_array().cloned())
    }

    pub async fn quit(self) {
        let _ = self.command(reqwest::Method::DELETE, "", None).await;
    }
}
