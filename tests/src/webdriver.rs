//! A small W3C WebDriver client over reqwest, enough to drive Debian's headless Chromium
//! through `chromedriver`: open a page, click, press keys, run a script. (A dozen calls; a
//! full client crate would bring its own HTTP and TLS stacks into the cold CI build.)

use serde_json::{json, Value};
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;
use tether_devkit::ChildProcess;

/// Where Debian puts Chromium and its driver.
pub const CHROMIUM: &str = "/usr/bin/chromium";
/// The WebDriver server for it.
pub const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

/// A browser session driven over WebDriver; the driver (and its browser) die on drop.
pub struct Browser {
    http: reqwest::Client,
    base: String,
    _driver: ChildProcess,
}

/// The W3C element key in JSON.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

impl Browser {
    /// Whether Chromium and chromedriver are installed.
    pub fn available() -> bool {
        Path::new(CHROMIUM).exists() && Path::new(CHROMEDRIVER).exists()
    }

    /// Starts chromedriver on a free port and opens a headless Chromium that may use
    /// loopback for WebRTC.
    pub async fn start(log: &Path) -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a: SocketAddr| a.port())
            .expect("a free port");
        let mut command = std::process::Command::new(CHROMEDRIVER);
        command
            .arg(format!("--port={port}"))
            .arg(format!("--log-path={}", log.display()))
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null());
        let driver = ChildProcess::spawn(command).expect("starting chromedriver");
        let http = tether_api::tls::http();
        let base = format!("http://127.0.0.1:{port}");
        crate::wait_until("chromedriver to be ready", crate::WAIT, || {
            let request = http.get(format!("{base}/status")).send();
            async move {
                let status: Value = request.await.ok()?.json().await.ok()?;
                (status["value"]["ready"] == true).then_some(())
            }
        })
        .await;
        let capabilities = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": CHROMIUM,
                "args": [
                    "--headless=new", "--no-sandbox", "--disable-gpu",
                    "--disable-dev-shm-usage", "--window-size=1200,900",
                    "--allow-loopback-in-peer-connection",
                    "--disable-features=WebRtcHideLocalIpsWithMdns",
                    "--autoplay-policy=no-user-gesture-required"
                ]
            }
        }}});
        let created: Value = http
            .post(format!("{base}/session"))
            .json(&capabilities)
            .send()
            .await
            .expect("creating a WebDriver session")
            .json()
            .await
            .expect("WebDriver JSON");
        let session = created["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no WebDriver session: {created}"))
            .to_owned();
        Self {
            http,
            base: format!("{base}/session/{session}"),
            _driver: driver,
        }
    }

    async fn call(&self, method: reqwest::Method, path: &str, body: Value) -> Value {
        let url = format!("{}{path}", self.base);
        let mut request = self.http.request(method, &url);
        if !body.is_null() {
            request = request.json(&body);
        }
        let reply: Value = request
            .timeout(Duration::from_secs(60))
            .send()
            .await
            .unwrap_or_else(|e| panic!("WebDriver {path}: {e}"))
            .json()
            .await
            .expect("WebDriver JSON");
        if reply["value"]["error"].is_string() {
            panic!("WebDriver {path} failed: {}", reply["value"]);
        }
        reply["value"].clone()
    }

    /// Opens `url`.
    pub async fn goto(&self, url: &str) {
        self.call(reqwest::Method::POST, "/url", json!({ "url": url }))
            .await;
    }

    /// Clicks the element matching the CSS `selector`.
    pub async fn click(&self, selector: &str) {
        let element = self
            .call(
                reqwest::Method::POST,
                "/element",
                json!({"using": "css selector", "value": selector}),
            )
            .await;
        let id = element[ELEMENT]
            .as_str()
            .unwrap_or_else(|| panic!("no element for {selector}: {element}"))
            .to_owned();
        self.call(
            reqwest::Method::POST,
            &format!("/element/{id}/click"),
            json!({}),
        )
        .await;
    }

    /// Runs `script` (a function body) in the page and returns its value.
    pub async fn eval(&self, script: &str) -> Value {
        self.call(
            reqwest::Method::POST,
            "/execute/sync",
            json!({ "script": script, "args": [] }),
        )
        .await
    }

    /// Holds `key` down for `held`, then releases it (real key events).
    pub async fn press(&self, key: &str, held: Duration) {
        let actions = json!({"actions": [{
            "type": "key", "id": "keyboard",
            "actions": [
                {"type": "keyDown", "value": key},
                {"type": "pause", "duration": held.as_millis() as u64},
                {"type": "keyUp", "value": key}
            ]
        }]});
        self.call(reqwest::Method::POST, "/actions", actions).await;
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // Ending the session closes Chromium; the driver is killed right after.
        let url = self.base.clone();
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build();
            if let Ok(rt) = rt {
                rt.block_on(async {
                    let _ = tether_api::tls::http()
                        .delete(url)
                        .timeout(Duration::from_secs(5))
                        .send()
                        .await;
                });
            }
        })
        .join();
    }
}
