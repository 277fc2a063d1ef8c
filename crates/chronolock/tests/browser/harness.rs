//! The browser tests' harness: the real server in-process on a fresh SQLite data directory at
//! 127.0.0.1:0, Debian's `chromedriver` on a free loopback port, and headless Chromium driven
//! through WebDriver (fantoccini, plain HTTP: everything stays on loopback).
//!
//! Everything it starts is stopped when the [`Browser`] is dropped, also when a test panics or
//! runs out of time: chromedriver runs in its own process group, which is killed whole, and any
//! Chromium process still naming this test's temporary profile directory is killed after it.
//! Every step can save a PNG screenshot into `target/browser-screenshots/`, for a person to look
//! at what the admin sees.

use std::future::Future;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use chronolock_server::{router, AppState};
use fantoccini::elements::Element;
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::json;

use crate::common;

/// Where Debian puts the browser and its WebDriver; `CHRONOLOCK_CHROMIUM` and
/// `CHRONOLOCK_CHROMEDRIVER` override them.
const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

/// How long one wait for a page or an element may take.
const WAIT: Duration = Duration::from_secs(15);

/// The browser window, in CSS pixels.
const WINDOW: (u32, u32) = (1280, 900);

/// Tallest full-page screenshot, in pixels.
const MAX_SHOT_HEIGHT: u32 = 4000;

/// Runs a whole browser test with a time limit; what it started is cleaned up either way,
/// because dropping the future drops its [`Browser`].
pub async fn bounded(limit: Duration, test: impl Future<Output = ()>) {
    if tokio::time::timeout(limit, test).await.is_err() {
        panic!("the browser test took longer than {limit:?}");
    }
}

/// The browser and WebDriver binaries, or `None` (after a note) when they are missing outside
/// CI. Under CI a missing browser is an error: the test command installs it.
fn tools() -> Option<(PathBuf, PathBuf)> {
    let chromium = std::env::var_os("CHRONOLOCK_CHROMIUM").map_or(CHROMIUM.into(), PathBuf::from);
    let driver =
        std::env::var_os("CHRONOLOCK_CHROMEDRIVER").map_or(CHROMEDRIVER.into(), PathBuf::from);
    let missing: Vec<String> = [&chromium, &driver]
        .into_iter()
        .filter(|p| !p.is_file())
        .map(|p| p.display().to_string())
        .collect();
    if missing.is_empty() {
        return Some((chromium, driver));
    }
    let what = missing.join(" and ");
    assert!(
        std::env::var_os("CI").is_none(),
        "CI must run the browser tests, but {what} is missing: run the suite through \
         scripts/test.sh, which installs Debian's chromium and chromium-driver"
    );
    eprintln!(
        "note: {what} missing; browser tests skipped (apt-get install chromium chromium-driver)"
    );
    None
}

/// A free TCP port on loopback, for chromedriver (which needs a number before it starts).
fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
    listener.local_addr().expect("local address").port()
}

/// A process group (chromedriver and the browsers it starts) killed whole on drop, with every
/// process still naming `marker` (the profile directory) on its command line.
struct ProcessGroup {
    child: Child,
    marker: PathBuf,
}

impl Drop for ProcessGroup {
    fn drop(&mut self) {
        let group = format!("-{}", self.child.id());
        let _ = Command::new("kill")
            .args(["-KILL", "--", &group])
            .stderr(Stdio::null())
            .status();
        let _ = self.child.kill();
        let _ = self.child.wait();
        // Chromium may have left the group (its zygote); find it by the profile directory.
        let stragglers = processes_naming(&self.marker);
        if !stragglers.is_empty() {
            let _ = Command::new("kill")
                .arg("-KILL")
                .args(stragglers.iter().map(u32::to_string))
                .stderr(Stdio::null())
                .status();
        }
        let _ = std::fs::remove_dir_all(&self.marker);
    }
}

/// Ids of the processes whose command line contains `marker`.
fn processes_naming(marker: &Path) -> Vec<u32> {
    let needle = marker.as_os_str().as_encoded_bytes();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| *pid != std::process::id())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|cmd| cmd.windows(needle.len()).any(|w| w == needle))
        })
        .collect()
}

/// Where screenshots go: `$CARGO_TARGET_DIR/browser-screenshots`, else the workspace's
/// `target/browser-screenshots`.
fn screenshot_dir() -> PathBuf {
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let target = match std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from) {
        Some(dir) if dir.is_absolute() => dir,
        Some(dir) => workspace.join(dir),
        None => workspace.join("target"),
    };
    let dir = target.join("browser-screenshots");
    std::fs::create_dir_all(&dir).expect("make the screenshot directory");
    dir.canonicalize().unwrap_or(dir)
}

/// A logged-out browser pointed at a fresh server.
pub struct Browser {
    /// The WebDriver session.
    pub client: Client,
    /// The server's database, for checks the page does not show.
    pub state: AppState,
    base: String,
    test: &'static str,
    shots: u32,
    /// The window's size (width, height) between screenshots.
    window: (u32, u32),
    started: Instant,
    server: tokio::task::JoinHandle<()>,
    // Dropped last: kills chromedriver and the browser.
    _driver: ProcessGroup,
}

impl Drop for Browser {
    fn drop(&mut self) {
        self.server.abort();
    }
}

impl Browser {
    /// Starts the server, chromedriver and headless Chromium for the test named `test`; `None`
    /// when the browser is not installed (outside CI).
    pub async fn start(test: &'static str) -> Option<Browser> {
        let (chromium, chromedriver) = tools()?;
        let started = Instant::now();

        let state = AppState::open(&common::sqlite_config(&format!("browser_{test}")))
            .await
            .expect("open a fresh SQLite database");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the server");
        let addr = listener.local_addr().expect("server address");
        let app = router(state.clone());
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });

        let profile = std::env::temp_dir().join(format!(
            "chronolock-browser-{test}-{}-{}",
            std::process::id(),
            free_port()
        ));
        std::fs::create_dir_all(&profile).expect("make the browser profile directory");
        let port = free_port();
        let log = profile.join("chromedriver.log");
        let child = Command::new(&chromedriver)
            .arg(format!("--port={port}"))
            .arg(format!("--log-path={}", log.display()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .unwrap_or_else(|e| panic!("start {}: {e}", chromedriver.display()));
        let mut driver = ProcessGroup {
            child,
            marker: profile.clone(),
        };
        wait_for_port(&mut driver, port, &log).await;

        let caps = json!({
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": chromium,
                "args": [
                    "--headless=new",
                    "--no-sandbox",
                    "--disable-gpu",
                    "--disable-dev-shm-usage",
                    format!("--window-size={},{}", WINDOW.0, WINDOW.1),
                    "--no-first-run",
                    "--no-default-browser-check",
                    format!("--user-data-dir={}", profile.join("profile").display()),
                ],
            },
            "timeouts": {"pageLoad": 30_000, "script": 10_000, "implicit": 0},
        });
        let serde_json::Value::Object(caps) = caps else {
            unreachable!("capabilities are an object")
        };
        // On a loaded machine chromedriver may listen before it can start a session (three tests
        // start Chromium at once on two cores): a refused first session is tried again.
        let mut attempts = 0;
        let client = loop {
            let connected =
                ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
                    .capabilities(caps.clone())
                    .connect(&format!("http://127.0.0.1:{port}"))
                    .await;
            match connected {
                Ok(c) => break c,
                Err(e) if attempts < 4 => {
                    attempts += 1;
                    eprintln!("browser: WebDriver session not started ({e}); trying again");
                    tokio::time::sleep(Duration::from_secs(2)).await;
                }
                Err(e) => panic!("start a WebDriver session: {e}\n{}", tail(&log)),
            }
        };

        let dir = screenshot_dir();
        // Old screenshots of this test would mix with the new ones.
        if let Ok(entries) = std::fs::read_dir(&dir) {
            for e in entries.filter_map(Result::ok) {
                if e.file_name()
                    .to_string_lossy()
                    .starts_with(&format!("{test}-"))
                {
                    let _ = std::fs::remove_file(e.path());
                }
            }
        }
        eprintln!(
            "browser: server on {addr}, chromedriver on {port}, ready in {:?}",
            started.elapsed()
        );
        Some(Browser {
            client,
            state,
            base: format!("http://{addr}"),
            test,
            shots: 0,
            window: WINDOW,
            started,
            server,
            _driver: driver,
        })
    }

    /// The server's address, as the browser sees it.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Opens `path` on the server.
    pub async fn goto(&self, path: &str) {
        self.client
            .goto(&self.url(path))
            .await
            .unwrap_or_else(|e| panic!("open {path}: {e}"));
    }

    /// Waits until the browser is on `path` (after a redirect or a form's answer).
    pub async fn wait_path(&self, path: &str) {
        let deadline = Instant::now() + WAIT;
        loop {
            let url = self.client.current_url().await.expect("current URL");
            if url.path() == path {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "expected to be on {path}, still on {url}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits until the browser is on a page below `prefix` (like `/doors/` after adding a door)
    /// and returns that page's path.
    pub async fn wait_path_under(&self, prefix: &str) -> String {
        let deadline = Instant::now() + WAIT;
        loop {
            let path = self.path().await;
            if path.len() > prefix.len() && path.starts_with(prefix) {
                return path;
            }
            assert!(
                Instant::now() < deadline,
                "expected a page under {prefix}, still on {path}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The element `css` names, waiting for it to appear.
    pub async fn find(&self, css: &str) -> Element {
        let found = self
            .client
            .wait()
            .at_most(WAIT)
            .every(Duration::from_millis(50))
            .for_element(Locator::Css(css))
            .await;
        match found {
            Ok(element) => element,
            Err(e) => panic!("find {css} on {}: {e}", self.here().await),
        }
    }

    /// Waits until the text of `css` is `expected` (after a form posts back to the same page).
    pub async fn wait_text(&self, css: &str, expected: &str) {
        self.wait_for_text(css, expected, |text| text == expected)
            .await;
    }

    /// Waits until the visible text of `css` contains `part` (the page reloading after a form).
    pub async fn wait_text_containing(&self, css: &str, part: &str) -> String {
        self.wait_for_text(css, part, |text| text.contains(part))
            .await
    }

    async fn wait_for_text(&self, css: &str, wanted: &str, ok: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + WAIT;
        loop {
            let text = match self.client.find(Locator::Css(css)).await {
                Ok(element) => element.text().await.unwrap_or_default(),
                Err(_) => String::new(),
            };
            if ok(&text) {
                return text;
            }
            assert!(
                Instant::now() < deadline,
                "expected {css} to read {wanted:?}, it reads {text:?} on {}",
                self.here().await
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Whether an element `css` is on the page now.
    pub async fn has(&self, css: &str) -> bool {
        self.client.find(Locator::Css(css)).await.is_ok()
    }

    /// The visible text of `css`.
    pub async fn text(&self, css: &str) -> String {
        self.find(css)
            .await
            .text()
            .await
            .unwrap_or_else(|e| panic!("text of {css}: {e}"))
    }

    /// Replaces the value of the field `css` with `value`, typing it as a person would.
    pub async fn fill(&self, css: &str, value: &str) {
        let field = self.find(css).await;
        field
            .clear()
            .await
            .unwrap_or_else(|e| panic!("clear {css}: {e}"));
        field
            .send_keys(value)
            .await
            .unwrap_or_else(|e| panic!("type into {css}: {e}"));
    }

    /// Chooses the option whose visible text is `label` in the select `css`.
    pub async fn select_label(&self, css: &str, label: &str) {
        self.find(css)
            .await
            .select_by_label(label)
            .await
            .unwrap_or_else(|e| panic!("choose {label:?} in {css}: {e}"));
    }

    /// Chooses the option whose value is `value` in the select `css`.
    pub async fn select_value(&self, css: &str, value: &str) {
        self.find(css)
            .await
            .select_by_value(value)
            .await
            .unwrap_or_else(|e| panic!("choose value {value:?} in {css}: {e}"));
    }

    /// The value a field holds now (what the form would send).
    pub async fn value(&self, css: &str) -> String {
        self.find(css)
            .await
            .prop("value")
            .await
            .unwrap_or_else(|e| panic!("value of {css}: {e}"))
            .unwrap_or_default()
    }

    /// The path of the page the browser shows.
    pub async fn path(&self) -> String {
        self.client
            .current_url()
            .await
            .expect("current URL")
            .path()
            .to_string()
    }

    /// A PNG screenshot of just the element `css`.
    pub async fn element_png(&self, css: &str) -> Vec<u8> {
        self.find(css)
            .await
            .screenshot()
            .await
            .unwrap_or_else(|e| panic!("screenshot of {css}: {e}"))
    }

    /// Clicks `css`.
    pub async fn click(&self, css: &str) {
        self.find(css)
            .await
            .click()
            .await
            .unwrap_or_else(|e| panic!("click {css}: {e}"));
    }

    /// Saves a screenshot of the whole page as `<test>-<nn>-<step>.png` and returns its path.
    ///
    /// WebDriver screenshots show the viewport only, so the window is made as tall as the page
    /// (up to [`MAX_SHOT_HEIGHT`]) for the picture, then set back.
    pub async fn shot(&mut self, step: &str) -> PathBuf {
        self.shots += 1;
        let sizes = self
            .client
            .execute(
                "return [document.documentElement.scrollHeight, \
                         window.outerHeight - window.innerHeight];",
                Vec::new(),
            )
            .await
            .unwrap_or_else(|e| panic!("page height for {step}: {e}"));
        let px = |i: usize| sizes[i].as_u64().unwrap_or(0) as u32;
        let (width, height) = self.window;
        let tall = (px(0) + px(1)).clamp(height, MAX_SHOT_HEIGHT);
        if tall > height {
            self.resize(width, tall).await;
        }
        let png = self.client.screenshot().await;
        if tall > height {
            self.resize(width, height).await;
        }
        let png = png.unwrap_or_else(|e| panic!("screenshot {step}: {e}"));
        let path = screenshot_dir().join(format!("{}-{:02}-{step}.png", self.test, self.shots));
        std::fs::write(&path, png).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
        eprintln!(
            "browser: {:>6.2} s  {}",
            self.started.elapsed().as_secs_f64(),
            path.display()
        );
        path
    }

    /// Makes the window `width` × `height` (e.g. a phone's 390 × 844) for the steps that follow.
    pub async fn set_window(&mut self, width: u32, height: u32) {
        self.window = (width, height);
        self.resize(width, height).await;
    }

    /// The page's width and the viewport's, in CSS pixels: a page that scrolls sideways is
    /// wider than its viewport.
    pub async fn widths(&self) -> (u64, u64) {
        let w = self
            .client
            .execute(
                "return [document.documentElement.scrollWidth, document.documentElement.clientWidth];",
                Vec::new(),
            )
            .await
            .unwrap_or_else(|e| panic!("page width: {e}"));
        (w[0].as_u64().unwrap_or(0), w[1].as_u64().unwrap_or(0))
    }

    async fn resize(&self, width: u32, height: u32) {
        self.client
            .set_window_size(width, height)
            .await
            .unwrap_or_else(|e| panic!("resize the window to {width}x{height}: {e}"));
    }

    /// The current URL, for messages.
    async fn here(&self) -> String {
        self.client
            .current_url()
            .await
            .map_or_else(|e| format!("(no URL: {e})"), |u| u.to_string())
    }

    /// Ends the WebDriver session (the browser quits); the processes are killed on drop anyway.
    pub async fn close(self) {
        let elapsed = self.started.elapsed();
        let _ = self.client.clone().close().await;
        eprintln!("browser: {} done in {elapsed:?}", self.test);
    }
}

/// Waits until chromedriver accepts connections on `port`, or fails with its log.
async fn wait_for_port(driver: &mut ProcessGroup, port: u16, log: &Path) {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let deadline = Instant::now() + WAIT;
    loop {
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return;
        }
        if let Ok(Some(status)) = driver.child.try_wait() {
            panic!(
                "chromedriver exited ({status}) before listening\n{}",
                tail(log)
            );
        }
        assert!(
            Instant::now() < deadline,
            "chromedriver is not listening on {port} after {WAIT:?}\n{}",
            tail(log)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The last lines of a log file, for a failure message.
fn tail(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(30)..].join("\n")
}
