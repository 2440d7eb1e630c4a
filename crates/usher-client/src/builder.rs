//! The builders behind [`Client::checkout`] and [`Client::borrow`]: a request names its
//! feature, everything else has a default, and awaiting the builder sends it.
//!
//! Options are methods rather than positional arguments so that new ones (a newer
//! server's) can be added without breaking a single caller.

use std::future::{Future, IntoFuture};
use std::pin::Pin;
use std::time::Duration;

use tokio::sync::watch;

use crate::{Client, ClientError, License, QueueWait, borrow::BorrowToken};

/// The future an awaited request builder runs.
type Sending<'c, T> = Pin<Box<dyn Future<Output = Result<T, ClientError>> + Send + 'c>>;

/// A checkout being built: made by [`Client::checkout`], sent by `.await` (or
/// [`CheckoutRequest::send`]).
///
/// By default it asks for one seat of any version, and is refused at once if no seat is
/// free.
///
/// ```no_run
/// # async fn demo(client: &usher_client::Client) -> Result<(), usher_client::ClientError> {
/// use std::time::Duration;
/// use usher_client::QueueWait;
///
/// let license = client
///     .checkout("cad")
///     .version("2025")
///     .count(2)
///     .wait(QueueWait::For(Duration::from_secs(300)))
///     .await?;
/// # Ok(()) }
/// ```
#[derive(Debug)]
#[must_use = "a checkout does nothing until it is awaited"]
pub struct CheckoutRequest<'c> {
    pub(crate) client: &'c Client,
    pub(crate) feature: String,
    pub(crate) version: String,
    pub(crate) count: u32,
    pub(crate) wait: QueueWait,
    pub(crate) position: Option<watch::Sender<u32>>,
}

impl<'c> CheckoutRequest<'c> {
    pub(crate) fn new(client: &'c Client, feature: &str) -> Self {
        CheckoutRequest {
            client,
            feature: feature.to_string(),
            version: String::new(),
            count: 1,
            wait: QueueWait::No,
            position: None,
        }
    }

    /// Asks for version `version` or newer (default: any version).
    pub fn version(mut self, version: &str) -> Self {
        self.version = version.to_string();
        self
    }

    /// Asks for `count` seats (default 1). A count of 0 is refused without asking the
    /// server.
    pub fn count(mut self, count: u32) -> Self {
        self.count = count;
        self
    }

    /// How long to wait in the server's queue if every seat is taken (default
    /// [`QueueWait::No`]: refused at once). Dropping the awaiting future withdraws the
    /// request from the queue (within one heartbeat interval).
    pub fn wait(mut self, wait: QueueWait) -> Self {
        self.wait = wait;
        self
    }

    /// Follows the request's place in the queue: the returned [`QueuePosition`] is told
    /// the place whenever the server says it (when the request is queued, and again after
    /// a reconnect).
    ///
    /// ```no_run
    /// # async fn demo(client: &usher_client::Client) -> Result<(), usher_client::ClientError> {
    /// let mut checkout = client.checkout("cad").wait(usher_client::QueueWait::Indefinitely);
    /// let mut position = checkout.queue_position();
    /// tokio::spawn(async move {
    ///     while let Some(place) = position.changed().await {
    ///         eprintln!("waiting for a seat of cad: position {place}");
    ///     }
    /// });
    /// let license = checkout.await?;
    /// # Ok(()) }
    /// ```
    pub fn queue_position(&mut self) -> QueuePosition {
        let (tx, rx) = watch::channel(0);
        self.position = Some(tx);
        QueuePosition { rx }
    }

    /// Sends the checkout and waits for the seats (what `.await` on the builder does).
    pub async fn send(self) -> Result<License, ClientError> {
        self.client.send_checkout(self).await
    }
}

impl<'c> IntoFuture for CheckoutRequest<'c> {
    type Output = Result<License, ClientError>;
    type IntoFuture = Sending<'c, License>;

    fn into_future(self) -> Self::IntoFuture {
        Box::pin(self.send())
    }
}

/// A waiting checkout's place in the server's queue (1: next). Made by
/// [`CheckoutRequest::queue_position`].
#[derive(Debug, Clone)]
pub struct QueuePosition {
    rx: watch::Receiver<u32>,
}

impl QueuePosition {
    /// The last place the server gave (0: not queued, or not yet).
    pub fn get(&self) -> u32 {
        *self.rx.borrow()
    }

    /// Waits for the server to give a place and returns it, or `None` once the checkout
    /// has ended (granted, refused or dropped).
    pub async fn changed(&mut self) -> Option<u32> {
        self.rx.changed().await.ok()?;
        Some(*self.rx.borrow_and_update())
    }
}

/// A borrow being built: made by [`Client::borrow`], sent by `.await` (or
/// [`BorrowRequest::send`]). By default it asks for one seat of any version.
///
/// ```no_run
/// # async fn demo(client: &usher_client::Client) -> Result<(), Box<dyn std::error::Error>> {
/// use std::time::Duration;
///
/// let week = Duration::from_secs(7 * 24 * 3600);
/// let token = client.borrow("cad", week).version("2025").await?;
/// usher_client::borrow::BorrowStore::user_default().save(&token)?;
/// # Ok(()) }
/// ```
#[derive(Debug)]
#[must_use = "a borrow does nothing until it is awaited"]
pub struct BorrowRequest<'c> {
    pub(crate) client: &'c Client,
    pub(crate) feature: String,
    pub(crate) version: String,
    pub(crate) count: u32,
    pub(crate) duration: Duration,
}

impl<'c> BorrowRequest<'c> {
    pub(crate) fn new(client: &'c Client, feature: &str, duration: Duration) -> Self {
        BorrowRequest {
            client,
            feature: feature.to_string(),
            version: String::new(),
            count: 1,
            duration,
        }
    }

    /// Asks for version `version` or newer (default: any version).
    pub fn version(mut self, version: &str) -> Self {
        self.version = version.to_string();
        self
    }

    /// Asks for `count` seats (default 1). A count of 0 is refused without asking the
    /// server.
    pub fn count(mut self, count: u32) -> Self {
        self.count = count;
        self
    }

    /// Sends the borrow and waits for the signed token (what `.await` on the builder
    /// does).
    pub async fn send(self) -> Result<BorrowToken, ClientError> {
        self.client.send_borrow(self).await
    }
}

impl<'c> IntoFuture for BorrowRequest<'c> {
    type Output = Result<BorrowToken, ClientError>;
    type IntoFuture = Sending<'c, BorrowToken>;

    fn into_future(self) -> Self::IntoFuture {
        Box::pin(self.send())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use tokio::sync::mpsc;
    use usher_proto::request;

    use super::*;
    use crate::driver::Call;
    use crate::{ClientError, DenyReason, ServerAddr, SessionInfo};

    /// A client whose calls land in the returned channel instead of a driver.
    fn client() -> (Client, mpsc::UnboundedReceiver<Call>) {
        let (calls, rx) = mpsc::unbounded_channel();
        let client = Client {
            calls,
            info: SessionInfo {
                server_version: String::new(),
                server_name: String::new(),
                server: ServerAddr {
                    host: "127.0.0.1".into(),
                    port: 1648,
                },
                heartbeat_interval: Duration::from_secs(30),
                session_ttl: Duration::from_secs(120),
            },
            request_timeout: Duration::from_secs(30),
            vendor_keys: Arc::from(Vec::new()),
            server_key: Arc::new(Mutex::new(None)),
            all_servers_local: true,
            connected: watch::channel(true).1,
        };
        (client, rx)
    }

    #[tokio::test]
    async fn the_builder_sends_what_it_was_told_and_defaults_to_one_seat_of_any_version() {
        let (client, mut calls) = client();
        let cases = [
            (client.checkout("cad"), ("cad", "", 1, false, 0)),
            (
                client
                    .checkout("sim")
                    .version("2025")
                    .count(3)
                    .wait(QueueWait::For(Duration::from_millis(1500))),
                ("sim", "2025", 3, true, 1500),
            ),
            (
                client.checkout("cad").wait(QueueWait::Indefinitely),
                ("cad", "", 1, true, 0),
            ),
        ];
        for (request, expected) in cases {
            // Nothing answers: the request is sent, then dropped with the future.
            let mut sending = std::pin::pin!(request.into_future());
            let call = tokio::select! {
                answer = &mut sending => panic!("answered with no server: {answer:?}"),
                call = calls.recv() => call,
            };
            let Some(Call::Request { kind, .. }) = call else {
                panic!("expected a request for {expected:?}");
            };
            let request::Kind::Checkout(c) = *kind else {
                panic!("expected a checkout for {expected:?}, got {kind:?}");
            };
            let sent = (
                c.feature.as_str(),
                c.version.as_str(),
                c.count,
                c.wait,
                c.wait_ms,
            );
            assert_eq!(sent, expected);
        }
    }

    #[tokio::test]
    async fn a_request_for_no_seats_is_refused_without_asking_the_server() {
        let (client, mut calls) = client();
        let refused = client.checkout("cad").count(0).await;
        assert!(
            matches!(&refused, Err(ClientError::Denied(d)) if d.reason == DenyReason::BadRequest),
            "{refused:?}"
        );
        let week = Duration::from_secs(7 * 86_400);
        let refused = client.borrow("cad", week).count(0).await;
        assert!(
            matches!(refused, Err(ClientError::Denied(_))),
            "{refused:?}"
        );
        assert!(calls.try_recv().is_err(), "nothing was sent");
    }

    #[tokio::test]
    async fn a_queue_position_follows_the_server_and_ends_with_the_checkout() {
        let (client, _calls) = client();
        let mut request = client.checkout("cad").wait(QueueWait::Indefinitely);
        let mut position = request.queue_position();
        let sender = request
            .position
            .take()
            .expect("the builder keeps the sender");
        assert_eq!(position.get(), 0);
        sender.send_replace(2);
        assert_eq!(position.changed().await, Some(2));
        assert_eq!(position.get(), 2);
        drop(sender); // the checkout ended
        assert_eq!(position.changed().await, None);
    }
}
