//! The dashboard in a real headless Chromium, driven through chromedriver (WebDriver):
//! a real `usherd` process, the page opened with the token in its fragment, a seat checked
//! out by a separate client, and the in-use count changing on the page without a reload;
//! and 5,000 holders: the totals, a page of holders at a time, grouping and search.
//!
//! Chromium is required, not optional: `scripts/test` installs it, so a missing browser is
//! a failure with instructions, never a skip.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use fantoccini::{ClientBuilder, Locator};
use usher_client::{Client, ClientConfig, ServerAddr};

use crate::util::{Licensed, eventually};

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

/// Kills and reaps a child process when dropped, so a failing test leaves nothing behind.
struct Reaped(Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn require(path: &str) {
    assert!(
        Path::new(path).exists(),
        "{path} is missing: the dashboard test drives a real headless Chromium. Install it \
         with `apt-get install -y chromium chromium-driver` (scripts/test does this)."
    );
}

async fn wait_listening(addr: SocketAddr, what: &str, child: &mut Child, log: &Path) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            let log = std::fs::read_to_string(log).unwrap_or_default();
            panic!("{what}: the process exited with {status}:\n{log}");
        }
        if tokio::net::TcpStream::connect(addr).await.is_ok() {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what} to listen on {addr}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn client_as(port: u16, user: &str, host: &str) -> Client {
    let mut config = ClientConfig::new(vec![ServerAddr {
        host: "127.0.0.1".into(),
        port,
    }]);
    config.identity.user = user.into();
    config.identity.host = host.into();
    config.identity.display = ":0".into();
    config.request_timeout = Duration::from_secs(20);
    config.connect_timeout = Duration::from_secs(20);
    Client::connect(config).await.expect("client connects")
}

/// A real `usherd` serving `lic`, with its client port, admin address and token.
struct Usherd {
    _process: Reaped,
    port: u16,
    admin: SocketAddr,
    token: String,
}

async fn start_usherd(lic: &Licensed, out: &Path, extra: &[&str]) -> Usherd {
    let (port, admin_port) = (free_port(), free_port());
    let usherd_log = out.join("usherd.log");
    let mut usherd = Reaped(
        Command::new(env!("CARGO_BIN_EXE_usherd"))
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .args(["--admin-listen", &format!("127.0.0.1:{admin_port}")])
            .arg("--data-dir")
            .arg(lic.data_dir())
            .arg("--license")
            .arg(&lic.license)
            .arg("--vendor-key")
            .arg(&lic.public)
            .args(["--min-remove", "0s", "--log", "info"])
            .args(extra)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&usherd_log).unwrap())
            .spawn()
            .expect("usherd starts"),
    );
    let admin = SocketAddr::from((Ipv4Addr::LOCALHOST, admin_port));
    wait_listening(admin, "usherd's admin listener", &mut usherd.0, &usherd_log).await;
    let token = std::fs::read_to_string(lic.data_dir().join("admin/token")).unwrap();
    let token = token.trim().to_string();
    let logged = std::fs::read_to_string(&usherd_log).unwrap();
    assert!(
        !logged.contains(&token),
        "the admin token never reaches the log:\n{logged}"
    );
    Usherd {
        _process: usherd,
        port,
        admin,
        token,
    }
}

/// Chromium through chromedriver, with the process and profile that must outlive it.
struct Browser {
    client: fantoccini::Client,
    _driver: Reaped,
    _profile: tempfile::TempDir,
}

async fn open_browser(out: &Path) -> Browser {
    let driver_port = free_port();
    let driver_log = out.join("chromedriver.log");
    let mut driver = Reaped(
        Command::new(CHROMEDRIVER)
            .arg(format!("--port={driver_port}"))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&driver_log).unwrap())
            .spawn()
            .expect("chromedriver starts"),
    );
    let driver_addr = SocketAddr::from((Ipv4Addr::LOCALHOST, driver_port));
    wait_listening(driver_addr, "chromedriver", &mut driver.0, &driver_log).await;
    let profile = tempfile::tempdir().unwrap();
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        serde_json::json!({
            "binary": CHROMIUM,
            "args": [
                "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1280,900", "--force-prefers-reduced-motion", "--lang=en-US",
                format!("--user-data-dir={}", profile.path().display()),
            ],
        }),
    );
    let client = ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
        .capabilities(caps)
        .connect(&format!("http://{driver_addr}"))
        .await
        .unwrap_or_else(|e| {
            let log = std::fs::read_to_string(&driver_log).unwrap_or_default();
            panic!("chromedriver could not start Chromium: {e}\n{log}")
        });
    Browser {
        client,
        _driver: driver,
        _profile: profile,
    }
}

fn out_dir(name: &str) -> PathBuf {
    let out = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(name);
    std::fs::create_dir_all(&out).unwrap();
    out
}

/// The text of the element `css`, or `None` if there is none yet.
async fn text_of(browser: &fantoccini::Client, css: &str) -> Option<String> {
    browser
        .find(Locator::Css(css))
        .await
        .ok()?
        .text()
        .await
        .ok()
}

/// An attribute of the element `css`.
async fn attr_of(browser: &fantoccini::Client, css: &str, name: &str) -> Option<String> {
    browser
        .find(Locator::Css(css))
        .await
        .ok()?
        .attr(name)
        .await
        .ok()?
}

/// Clicks the element `css`.
async fn click(browser: &fantoccini::Client, css: &str) {
    let el = browser.find(Locator::Css(css)).await;
    el.unwrap_or_else(|e| panic!("no {css}: {e}"))
        .click()
        .await
        .unwrap_or_else(|e| panic!("clicking {css}: {e}"));
}

/// The texts of every element `css`.
async fn texts_of(browser: &fantoccini::Client, css: &str) -> Option<Vec<String>> {
    let mut out = Vec::new();
    for el in browser.find_all(Locator::Css(css)).await.ok()? {
        out.push(el.text().await.ok()?);
    }
    Some(out)
}

/// The attribute `name` of every element `css`, in document order.
async fn attrs_of(browser: &fantoccini::Client, css: &str, name: &str) -> Option<Vec<String>> {
    let mut out = Vec::new();
    for el in browser.find_all(Locator::Css(css)).await.ok()? {
        out.push(el.attr(name).await.ok()??);
    }
    Some(out)
}

#[tokio::test(flavor = "multi_thread")]
async fn the_dashboard_shows_a_checkout_live_in_chromium() {
    require(CHROMIUM);
    require(CHROMEDRIVER);
    let lic = Licensed::new(
        "FEATURE cad acme 2025 permanent 3 HOSTID=ANY\nFEATURE sim acme 1.0 permanent 2 HOSTID=ANY\n",
    );
    let out = out_dir("dashboard");
    let usherd = start_usherd(&lic, &out, &[]).await;
    let (port, admin, token) = (usherd.port, usherd.admin, usherd.token.as_str());

    // Someone already holds a seat, and someone was turned away, so the page has history.
    let ana = client_as(port, "ana", "ws7").await;
    let _held = ana.checkout("cad").await.unwrap();
    let _sim = ana.checkout("sim").count(2).await.unwrap();
    let _ = ana.checkout("sim").await.unwrap_err();

    // chromedriver, then Chromium through it.
    let chromium = open_browser(&out).await;
    let browser = chromium.client.clone();

    let result = async {
        browser
            .goto(&format!("http://{admin}/#token={token}"))
            .await
            .unwrap();
        let count = "article[data-feature=\"cad\"] .inuse";
        let shown = |want: &'static str| {
            let browser = browser.clone();
            async move {
                let el = browser.find(Locator::Css(count)).await.ok()?;
                let text = el.text().await.ok()?;
                (text == want).then_some(())
            }
        };
        eventually(
            Duration::from_secs(30),
            "the page shows 1 cad seat in use",
            || shown("1"),
        )
        .await;
        let url = browser.current_url().await.unwrap();
        assert!(
            !url.as_str().contains("token="),
            "the token is taken out of the address bar: {url}"
        );
        // A mark that a reload would erase.
        browser
            .execute("window.__sameDocument = 42; return null;", vec![])
            .await
            .unwrap();

        // A separate client checks out a seat; the page follows without being reloaded.
        let bob = client_as(port, "bob", "ws9").await;
        let _seat = bob.checkout("cad").await.unwrap();
        eventually(
            Duration::from_secs(30),
            "the page shows 2 cad seats in use",
            || shown("2"),
        )
        .await;
        let mark = browser
            .execute("return window.__sameDocument;", vec![])
            .await
            .unwrap();
        assert_eq!(mark, serde_json::json!(42), "the page was reloaded");
        let rows = eventually(Duration::from_secs(30), "three holder rows", || async {
            let rows = texts_of(&browser, "#holders tr[data-lease]").await?;
            (rows.len() == 3).then_some(rows)
        })
        .await;
        let cad: Vec<&String> = rows.iter().filter(|r| r.starts_with("cad")).collect();
        assert_eq!(cad.len(), 2, "one holder row per lease: {rows:?}");
        assert!(
            cad.iter().any(|r| r.contains("bob") && r.contains("ws9")),
            "{rows:?}"
        );
        // The chart has been drawn, with the peak marked, and sim's denial.
        eventually(
            Duration::from_secs(30),
            "the usage charts are drawn",
            || async {
                let peaks = browser
                    .find_all(Locator::Css("svg.chart circle.peak"))
                    .await
                    .ok()?;
                let denials = browser
                    .find_all(Locator::Css("svg.chart path.denial"))
                    .await
                    .ok()?;
                let cad = browser
                    .find(Locator::Css("article[data-feature=\"cad\"]"))
                    .await
                    .ok()?
                    .text()
                    .await
                    .ok()?;
                // The checkout redraws the chart at once: its peak is the new level.
                (peaks.len() == 2 && !denials.is_empty() && cad.contains("peak 2 of 3"))
                    .then_some(())
            },
        )
        .await;
        let health = browser
            .find(Locator::Id("health"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(health.contains("healthy"), "{health}");

        let png = browser.screenshot().await.unwrap();
        assert!(png.starts_with(b"\x89PNG"), "a PNG screenshot");
        let shot = out.join("dashboard.png");
        std::fs::write(&shot, &png).unwrap();
        eprintln!("screenshot: {}", shot.display());
    }
    .await;
    browser.close().await.unwrap();
    drop((chromium, usherd));
    result
}

/// 5,000 holders (ten users of 500 seats each, over ten connections): the page shows the
/// totals first, then one page of 50 holders at a time, groups them by user and searches
/// them, all through the paged API.
#[tokio::test(flavor = "multi_thread")]
async fn five_thousand_holders_are_counted_paged_grouped_and_searched_in_chromium() {
    require(CHROMIUM);
    require(CHROMEDRIVER);
    const USERS: u64 = 10;
    const PER_USER: u64 = 500;
    let lic = Licensed::new("FEATURE big acme 1.0 permanent 10000 HOSTID=ANY\n");
    let out = out_dir("dashboard-5000");
    // Raw connections pipeline the checkouts (plaintext, no rate limit).
    let usherd = start_usherd(
        &lic,
        &out,
        &["--insecure-plaintext", "--max-request-rate", "0"],
    )
    .await;
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, usherd.port));
    let mut fills = Vec::new();
    for u in 0..USERS {
        fills.push(tokio::spawn(async move {
            crate::scale::pipelined(addr, &format!("user-{u:02}"), "big", PER_USER, false).await
        }));
    }
    let mut conns = Vec::new();
    for f in fills {
        conns.push(f.await.expect("a filling task"));
    }
    let all = (USERS * PER_USER).to_string();

    let chromium = open_browser(&out).await;
    let browser = chromium.client.clone();
    let result = async {
        browser
            .goto(&format!("http://{}/#token={}", usherd.admin, usherd.token))
            .await
            .unwrap();
        // Totals and the feature's count.
        eventually(
            Duration::from_secs(60),
            "the totals show 5,000 holders",
            || async {
                let holders = attr_of(&browser, "#total-holders", "data-value").await?;
                let in_use = attr_of(&browser, "#total-in-use", "data-value").await?;
                let card = text_of(&browser, "article[data-feature=\"big\"] .inuse").await?;
                (holders == all && in_use == all && card == all).then_some(())
            },
        )
        .await;
        let sessions = attr_of(&browser, "#total-sessions", "data-value").await;
        assert_eq!(
            sessions.as_deref(),
            Some("10"),
            "one session per connection"
        );

        // One page of 50, then the next page, then back. Rows are told apart by their lease
        // ids: two holders of one user on one host can read the same.
        let page = |want: &'static str| {
            let browser = browser.clone();
            async move {
                let range = text_of(&browser, "#holders-range").await?;
                let ids = attrs_of(&browser, "#holders tr[data-lease]", "data-lease").await?;
                (range.starts_with(want) && ids.len() == 50).then_some(ids)
            }
        };
        let first = eventually(Duration::from_secs(30), "the first page of 50", || {
            page("1–50 of 5,000")
        })
        .await;
        assert_eq!(
            attr_of(&browser, "#holders-range", "data-total")
                .await
                .as_deref(),
            Some(all.as_str())
        );
        click(&browser, "#holders-next").await;
        let second = eventually(Duration::from_secs(30), "the second page", || {
            page("51–100 of 5,000")
        })
        .await;
        assert!(
            first.iter().all(|id| !second.contains(id)),
            "the second page holds other holders: {first:?} then {second:?}"
        );
        click(&browser, "#holders-prev").await;
        eventually(Duration::from_secs(30), "back to the first page", || {
            page("1–50 of 5,000")
        })
        .await;

        // Grouped by user: ten groups of 500.
        browser
            .find(Locator::Id("holders-group"))
            .await
            .unwrap()
            .select_by_value("user")
            .await
            .unwrap();
        let groups = eventually(Duration::from_secs(30), "ten user groups", || async {
            let rows = texts_of(&browser, "#holders tr[data-group]").await?;
            (rows.len() == USERS as usize).then_some(rows)
        })
        .await;
        assert!(
            groups
                .iter()
                .all(|g| g.starts_with("user-") && g.contains("500")),
            "{groups:?}"
        );
        // One group's holders.
        click(&browser, "#holders tr[data-group=\"user-03\"] button").await;
        let rows = eventually(Duration::from_secs(30), "user-03's holders", || async {
            let total = attr_of(&browser, "#holders-range", "data-total").await?;
            let rows = texts_of(&browser, "#holders tr[data-lease]").await?;
            (total == "500" && rows.len() == 50).then_some(rows)
        })
        .await;
        assert!(rows.iter().all(|r| r.contains("user-03")), "{rows:?}");
        click(&browser, "#holders-exact button").await;

        // A search, any case.
        browser
            .find(Locator::Id("holders-search"))
            .await
            .unwrap()
            .send_keys("USER-07")
            .await
            .unwrap();
        let rows = eventually(Duration::from_secs(30), "the search's holders", || async {
            let total = attr_of(&browser, "#holders-range", "data-total").await?;
            let rows = texts_of(&browser, "#holders tr[data-lease]").await?;
            (total == "500" && rows.len() == 50 && rows.iter().all(|r| r.contains("user-07")))
                .then_some(rows)
        })
        .await;
        assert_eq!(rows.len(), 50);

        let png = browser.screenshot().await.unwrap();
        let shot = out.join("dashboard-5000.png");
        std::fs::write(&shot, &png).unwrap();
        eprintln!("screenshot: {}", shot.display());
    }
    .await;
    browser.close().await.unwrap();
    drop((chromium, usherd, conns));
    result
}
