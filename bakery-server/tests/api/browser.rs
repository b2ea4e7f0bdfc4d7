//! The status page in Debian's headless Chromium, driven over the DevTools protocol on
//! `--remote-debugging-pipe` (fds 3 and 4, NUL-separated JSON): no node, no WebSocket crate.
//! Skipped, loudly, when `chromium` is not installed (`apt-get install chromium`).

use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::os::fd::{FromRawFd, RawFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::common::*;

/// A headless Chromium and one page in it.
pub struct Browser {
    child: Child,
    to_chrome: File,
    from_chrome: mpsc::Receiver<Value>,
    next_id: u64,
    session: String,
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

/// A close-on-exec copy of `fd` numbered 10 or more; `fd` is closed.
fn above_four(fd: RawFd) -> RawFd {
    // SAFETY: fcntl(F_DUPFD_CLOEXEC) and close on an fd we own.
    unsafe {
        let high = libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 10);
        assert!(high >= 10, "fcntl(F_DUPFD_CLOEXEC)");
        libc::close(fd);
        high
    }
}

fn cloexec_pipe() -> (RawFd, RawFd) {
    let mut fds = [0; 2];
    // SAFETY: pipe2 writes two fds into the array.
    let rc = unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) };
    assert_eq!(rc, 0, "pipe2");
    (fds[0], fds[1])
}

impl Browser {
    /// Starts Chromium and opens a blank page; the panic quotes what Chromium printed.
    pub fn start(exe: &Path) -> Browser {
        Browser::launch(exe).unwrap_or_else(|why| panic!("chromium did not start: {why}"))
    }

    fn launch(exe: &Path) -> Result<Browser, String> {
        let profile = tempfile::tempdir().unwrap();
        let log = profile.path().join("chromium.log");
        let (cmd_read, cmd_write) = cloexec_pipe();
        let (out_read, out_write) = cloexec_pipe();
        // The child's ends must not be fds 3 or 4 themselves: dup2(3, 3) would keep the
        // close-on-exec flag (Chromium then starts without its command pipe: broken pipe on
        // our first write), and dup2(x, 3) would close an out_write that was 3.
        let (cmd_read, out_write) = (above_four(cmd_read), above_four(out_write));
        let mut command = Command::new(exe);
        command
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--no-first-run",
                "--no-default-browser-check",
                "--disable-extensions",
                // This machine has no network beyond loopback: without these Chromium keeps
                // trying to reach Google's hosts in the background.
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--disable-quic",
                "--remote-debugging-pipe",
                "--window-size=1280,900",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg("about:blank")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(File::create(&log).unwrap());
        // SAFETY: only dup2 (async-signal-safe) between fork and exec.
        unsafe {
            command.pre_exec(move || {
                if libc::dup2(cmd_read, 3) < 0 || libc::dup2(out_write, 4) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = command.spawn().expect("chromium starts");
        // SAFETY: we own these fds; the child has its own copies as 3 and 4.
        unsafe {
            libc::close(cmd_read);
            libc::close(out_write);
        }
        let to_chrome = unsafe { File::from_raw_fd(cmd_write) };
        let from = unsafe { File::from_raw_fd(out_read) };
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut reader = BufReader::new(from);
            loop {
                let mut message = Vec::new();
                match reader.read_until(0, &mut message) {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {
                        message.pop();
                        if let Ok(v) = serde_json::from_slice::<Value>(&message) {
                            if tx.send(v).is_err() {
                                return;
                            }
                        }
                    }
                }
            }
        });
        let mut browser = Browser {
            child,
            to_chrome,
            from_chrome: rx,
            next_id: 0,
            session: String::new(),
            _profile: profile,
        };
        let attached = browser
            .try_call(None, "Target.createTarget", json!({"url": "about:blank"}))
            .and_then(|target| {
                let target_id = target["targetId"].as_str().unwrap_or_default().to_owned();
                browser.try_call(
                    None,
                    "Target.attachToTarget",
                    json!({"targetId": target_id, "flatten": true}),
                )
            })
            .map_err(|why| {
                let status = browser.child.try_wait().ok().flatten();
                let printed = std::fs::read_to_string(&log).unwrap_or_default();
                let tail: Vec<&str> = printed.lines().rev().take(15).collect();
                format!("{why}; exit status {status:?}; it printed (last lines first): {tail:#?}")
            })?;
        browser.session = attached["sessionId"].as_str().unwrap().to_owned();
        Ok(browser)
    }

    fn call(&mut self, session: Option<&str>, method: &str, params: Value) -> Value {
        self.try_call(session, method, params)
            .unwrap_or_else(|why| panic!("{why}"))
    }

    /// Sends one DevTools command and waits up to 30 s for its answer.
    fn try_call(
        &mut self,
        session: Option<&str>,
        method: &str,
        params: Value,
    ) -> Result<Value, String> {
        self.next_id += 1;
        let id = self.next_id;
        let mut message = json!({"id": id, "method": method, "params": params});
        if let Some(s) = session {
            message["sessionId"] = json!(s);
        }
        let mut bytes = serde_json::to_vec(&message).unwrap();
        bytes.push(0);
        self.to_chrome
            .write_all(&bytes)
            .map_err(|e| format!("cannot send {method} to chromium: {e}"))?;
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let reply = self
                .from_chrome
                .recv_timeout(left)
                .map_err(|_| format!("chromium did not answer {method}"))?;
            if reply["id"] == json!(id) {
                assert!(reply.get("error").is_none(), "{method}: {reply}");
                return Ok(reply["result"].clone());
            }
        }
    }

    /// A call in the page's session.
    pub fn page(&mut self, method: &str, params: Value) -> Value {
        let session = self.session.clone();
        self.call(Some(&session), method, params)
    }

    /// Loads `url` in the page.
    pub fn navigate(&mut self, url: &str) {
        self.page("Page.enable", json!({}));
        self.page("Page.navigate", json!({"url": url}));
    }

    /// Evaluates a JavaScript expression in the page, returning its JSON value.
    pub fn eval(&mut self, expression: &str) -> Value {
        let r = self.page(
            "Runtime.evaluate",
            json!({"expression": expression, "returnByValue": true, "awaitPromise": true}),
        );
        r["result"]["value"].clone()
    }

    /// Evaluates `expression` until it is `true` or `timeout` passes.
    pub fn wait_for(&mut self, expression: &str, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if self.eval(expression) == json!(true) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        false
    }

    /// A PNG screenshot of the page.
    pub fn screenshot(&mut self) -> Vec<u8> {
        let shot = self.page("Page.captureScreenshot", json!({"format": "png"}));
        base64_decode(shot["data"].as_str().unwrap())
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn base64_decode(text: &str) -> Vec<u8> {
    let value = |c: u8| -> u32 {
        match c {
            b'A'..=b'Z' => u32::from(c - b'A'),
            b'a'..=b'z' => u32::from(c - b'a') + 26,
            b'0'..=b'9' => u32::from(c - b'0') + 52,
            b'+' => 62,
            b'/' => 63,
            _ => panic!("not base64: {c}"),
        }
    };
    let clean: Vec<u8> = text.bytes().filter(|c| !c.is_ascii_whitespace()).collect();
    let mut out = Vec::with_capacity(clean.len() / 4 * 3);
    for chunk in clean.chunks(4) {
        let digits: Vec<u32> = chunk
            .iter()
            .filter(|c| **c != b'=')
            .map(|c| value(*c))
            .collect();
        let mut n = 0u32;
        for (i, d) in digits.iter().enumerate() {
            n |= d << (18 - 6 * i);
        }
        let bytes = n.to_be_bytes();
        out.extend_from_slice(&bytes[1..digits.len()]);
    }
    out
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

fn rows(browser: &mut Browser) -> Value {
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

    let mut browser = Browser::start(&exe);
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
    assert_eq!(rows(&mut browser), json!(want));
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
        rows(&mut browser)
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

    let mut browser = Browser::start(&exe);
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
