//! The status page in Debian's headless Chromium, driven over the DevTools protocol by
//! chromiumoxide (on a tokio runtime of its own; the tests around it stay blocking).
//! Skipped, loudly, when `chromium` is not installed (`apt-get install chromium`).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use chromiumoxide::cdp::browser_protocol::page::CaptureScreenshotFormat;
use chromiumoxide::cdp::js_protocol::runtime::EvaluateParams;
use chromiumoxide::error::CdpError;
use chromiumoxide::page::ScreenshotParams;
use chromiumoxide::{BrowserConfig, Page};
use futures_util::StreamExt;
use serde_json::{Value, json};

use crate::common::*;

/// A headless Chromium and one page in it, behind blocking calls.
pub struct Browser {
    page: Page,
    chrome: chromiumoxide::Browser,
    runtime: tokio::runtime::Runtime,
    _profile: tempfile::TempDir,
}

/// The Chromium executable, if installed.
pub fn chromium() -> Option<PathBuf> {
    [
        "/usr/bin/chromium",
        "/usr/bin/chromium-browser",
        "/usr/bin/google-chrome",
    ]
    .iter()
    .map(PathBuf::from)
    .find(|p| p.exists())
}

impl Browser {
    /// Starts Chromium with a fresh profile and opens a blank page; the panic quotes what
    /// Chromium printed.
    pub fn start(exe: &Path) -> Browser {
        let profile = tempfile::tempdir().unwrap();
        let config = BrowserConfig::builder()
            .chrome_executable(exe)
            .user_data_dir(profile.path())
            // Only the flags below (chromiumoxide adds --headless, --no-sandbox,
            // --disable-extensions, --window-size and --remote-debugging-port=0 itself), and no
            // viewport emulation: the page sees the 1280x900 window.
            .disable_default_args()
            .no_sandbox()
            .window_size(1280, 900)
            .viewport(None)
            .args([
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--no-first-run",
                "--no-default-browser-check",
                // This machine has no network beyond loopback: without these Chromium keeps
                // trying to reach Google's hosts in the background.
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--disable-quic",
            ])
            .build()
            .unwrap();
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let (chrome, page) = runtime.block_on(async {
            let (chrome, mut handler) = chromiumoxide::Browser::launch(config)
                .await
                .unwrap_or_else(|why| panic!("chromium did not start: {why}"));
            tokio::spawn(async move { while handler.next().await.is_some() {} });
            let page = chrome
                .new_page("about:blank")
                .await
                .unwrap_or_else(|why| panic!("chromium opened no page: {why}"));
            (chrome, page)
        });
        Browser {
            page,
            chrome,
            runtime,
            _profile: profile,
        }
    }

    /// Loads `url` in the page and waits for its load event.
    pub fn navigate(&self, url: &str) {
        self.runtime
            .block_on(self.page.goto(url))
            .unwrap_or_else(|why| panic!("cannot load {url}: {why}"));
    }

    /// The JSON value of a JavaScript expression in the page (promises awaited), or why not.
    fn try_eval(&self, expression: &str) -> Result<Value, CdpError> {
        let params = EvaluateParams::builder()
            .expression(expression)
            .return_by_value(true)
            .await_promise(true)
            .build()
            .unwrap();
        let result = self
            .runtime
            .block_on(self.page.evaluate_expression(params))?;
        Ok(result.value().cloned().unwrap_or(Value::Null))
    }

    /// Evaluates a JavaScript expression in the page, returning its JSON value (`null` for
    /// `undefined`); a protocol error or a JavaScript exception fails the test.
    pub fn eval(&self, expression: &str) -> Value {
        self.try_eval(expression)
            .unwrap_or_else(|why| panic!("{expression}: {why}"))
    }

    /// Evaluates `expression` until it is `true` or `timeout` passes; a JavaScript exception
    /// (say, an element not there yet) counts as not yet, a protocol error fails the test.
    pub fn wait_for(&self, expression: &str, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            match self.try_eval(expression) {
                Ok(Value::Bool(true)) => return true,
                Ok(_) | Err(CdpError::JavascriptException(_)) => {}
                Err(why) => panic!("{expression}: {why}"),
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        false
    }

    /// A PNG screenshot of the page.
    pub fn screenshot(&self) -> Vec<u8> {
        let params = ScreenshotParams::builder()
            .format(CaptureScreenshotFormat::Png)
            .build();
        self.runtime
            .block_on(self.page.screenshot(params))
            .unwrap_or_else(|why| panic!("no screenshot: {why}"))
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // Kills Chromium and waits for it, before the profile directory is removed.
        let _ = self.runtime.block_on(self.chrome.kill());
    }
}

/// Where test artefacts (screenshots) go: `target/test-artefacts/`.
pub fn artefact_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let target = exe
        .ancestors()
        .find(|p| p.file_name().is_some_and(|n| n == "target"))
        .map(Path::to_path_buf)
        .unwrap_or_else(std::env::temp_dir);
    let dir = target.join("test-artefacts");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn rows(browser: &Browser) -> Value {
    browser.eval(
        "JSON.stringify([...document.querySelectorAll('#pis tbody tr')]\
         .map(r => [r.dataset.id, r.dataset.state]))",
    )
}

#[test]
fn the_status_page_lists_pis_and_shows_a_bake_without_reloading() {
    let Some(exe) = chromium() else {
        eprintln!(
            "\n!!!! SKIPPED browser test: chromium is not installed (apt-get install chromium) !!!!\n"
        );
        return;
    };
    let env = Env::new();
    let (server, pis) = ready_server(&env, 3);
    let baked = server.bake_ready(true);
    let resp = server.boot_request(&baked.id, "config.txt", None);
    assert_eq!(resp.status(), reqwest::StatusCode::OK);
    let root = server.base.trim_end_matches("/api/v1").to_owned();

    let browser = Browser::start(&exe);
    browser.navigate(&format!("{root}/"));
    assert!(
        browser.wait_for(
            "document.body.dataset.loaded === 'true' && document.getElementById('live').textContent === 'live'",
            Duration::from_secs(20)
        ),
        "page did not load: {}",
        browser.eval("document.body.innerText")
    );
    let mut want: Vec<(String, &str)> = pis
        .iter()
        .map(|p| (p.clone(), if *p == baked.id { "baked" } else { "fridge" }))
        .collect();
    want.sort();
    let want = serde_json::to_string(&want).unwrap();
    assert_eq!(rows(&browser), json!(want));
    // The baked Pi shows its bakeform, address and last boot; the bakeform is listed ready.
    let text = browser.eval(&format!(
        "document.getElementById('pi-{}').innerText",
        baked.id
    ));
    assert!(text.as_str().unwrap().contains(OS), "{text}");
    assert!(text.as_str().unwrap().contains("1 files"), "{text}");
    assert_eq!(
        browser.eval(&format!(
            "document.getElementById('bakeform-{OS}').dataset.state"
        )),
        json!("ready")
    );

    // The disks section: a free disk and one attached to the baked Pi, with their sizes.
    let free: bakery_client::Disk = server
        .post_json("/disks", &json!({"size": 24}))
        .json()
        .unwrap();
    let used: bakery_client::Disk = server
        .post_json("/disks", &json!({"size": 48}))
        .json()
        .unwrap();
    let resp = server.post_json(
        &format!("/oven/{}/disks", baked.id),
        &json!({"diskId": used.id}),
    );
    assert_eq!(resp.status(), reqwest::StatusCode::OK);
    let disk_row = |id: &str| format!("document.getElementById('disk-{id}')");
    assert!(
        browser.wait_for(
            &format!(
                "{} !== null && {}?.dataset.state === 'attached'",
                disk_row(&free.id),
                disk_row(&used.id)
            ),
            Duration::from_secs(20)
        ),
        "{}",
        browser.eval("document.getElementById('disks').innerText")
    );
    let free_text = browser.eval(&format!("{}.innerText", disk_row(&free.id)));
    let used_text = browser.eval(&format!("{}.innerText", disk_row(&used.id)));
    let (free_text, used_text) = (free_text.as_str().unwrap(), used_text.as_str().unwrap());
    assert!(
        free_text.contains("24 MiB") && free_text.contains("free"),
        "{free_text}"
    );
    assert!(
        used_text.contains("48 MiB")
            && used_text.contains(&baked.id)
            && used_text.contains("attached"),
        "{used_text}"
    );

    // Opening the last boot shows its timeline, file by file.
    browser.eval(&format!(
        "document.querySelector('#pi-{} details').open = true",
        baked.id
    ));
    assert!(
        browser.wait_for(
            &format!(
                "[...document.querySelectorAll('#pi-{} .timeline li')]\
                 .some(li => li.textContent.includes('config.txt sent'))",
                baked.id
            ),
            Duration::from_secs(10)
        ),
        "{}",
        browser.eval("document.getElementById('pis').innerText")
    );

    // A bake started through the API shows up without a reload, then turns baked.
    browser.eval("window.notReloaded = true");
    let second = server.bake(true);
    let row = format!("document.getElementById('pi-{}').dataset.state", second.id);
    assert!(
        browser.wait_for(
            &format!("['preparing', 'baked'].includes({row})"),
            Duration::from_secs(20)
        ),
        "{}",
        rows(&browser)
    );
    assert_eq!(
        server.wait_baked(&second.id).status(),
        reqwest::StatusCode::OK
    );
    assert!(browser.wait_for(&format!("{row} === 'baked'"), Duration::from_secs(20)));
    assert!(browser.wait_for(
        "[...document.querySelectorAll('#events li')].some(li => li.dataset.kind === 'bakeFinished')",
        Duration::from_secs(5)
    ));
    assert_eq!(
        browser.eval("window.notReloaded === true"),
        json!(true),
        "the page reloaded"
    );

    let png = browser.screenshot();
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
    let path = artefact_dir().join("status-page.png");
    std::fs::write(&path, &png).unwrap();
    eprintln!("status page screenshot: {}", path.display());
}

#[test]
fn the_status_page_asks_for_a_token_once_and_keeps_it_for_the_session() {
    let Some(exe) = chromium() else {
        eprintln!(
            "\n!!!! SKIPPED browser test: chromium is not installed (apt-get install chromium) !!!!\n"
        );
        return;
    };
    let env = Env::new();
    let token = "status-page-reader-0123456789";
    std::fs::write(env.path("tokens"), format!("ro:{token}\n")).unwrap();
    let tokens = env.path("tokens").display().to_string();
    let server = Server::start_with(&env, &["--token-file", &tokens]);
    let root = server.base.trim_end_matches("/api/v1").to_owned();
    // The page itself is public; the API behind it is not.
    assert_eq!(
        server
            .client
            .get(format!("{root}/"))
            .send()
            .unwrap()
            .status(),
        reqwest::StatusCode::OK
    );
    assert_eq!(
        server.get("/pis").status(),
        reqwest::StatusCode::UNAUTHORIZED
    );

    let browser = Browser::start(&exe);
    browser.navigate(&format!("{root}/"));
    assert!(browser.wait_for(
        "!document.getElementById('login').hidden",
        Duration::from_secs(20)
    ));
    browser.eval(&format!(
        "document.getElementById('token').value = '{token}'; \
         document.getElementById('login').requestSubmit(); true"
    ));
    assert!(
        browser.wait_for(
            "document.body.dataset.loaded === 'true' && document.getElementById('live').textContent === 'live'",
            Duration::from_secs(20)
        ),
        "{}",
        browser.eval("document.body.innerText")
    );
    assert_eq!(
        browser.eval("sessionStorage.getItem('bakeryToken')"),
        json!(token)
    );
    // A reload keeps the token: no second prompt.
    browser.navigate(&format!("{root}/"));
    assert!(browser.wait_for(
        "document.body.dataset.loaded === 'true'",
        Duration::from_secs(20)
    ));
    assert_eq!(
        browser.eval("document.getElementById('login').hidden"),
        json!(true)
    );
}
