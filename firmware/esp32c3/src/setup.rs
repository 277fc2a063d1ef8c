//! Setup mode: the door is its own Wi-Fi access point (`chronolock-XXXX`, WPA2, at 192.168.4.1)
//! and serves [`chronolock_device::setup::PAGE`]. The installer's phone posts its time, the Wi-Fi
//! network, the server address and the pairing code; the time goes to the controller (seed 000:
//! phone → ESP → RTC), the rest to flash, and the door restarts into station mode.
//!
//! The access point's password is the door's own, written to its `setup` partition when it was
//! first flashed (`scripts/flash.sh`); [`read_secret`] reads it, and the network's name comes
//! from it ([`chronolock_device::setup::setup_ssid`]), as on the label the flashing printed. A
//! door without a readable secret opens no access point at all: never an open network.

use core::fmt::Write as _;
use core::net::{Ipv4Addr, SocketAddrV4};

use chronolock_device::setup::{self, SetupForm, SetupSecretError, PASSWORD_MAX, SECRET_LEN};
use edge_dhcp::io::{self as dhcp_io, DEFAULT_SERVER_PORT};
use edge_dhcp::server::{Server as DhcpServer, ServerOptions};
use edge_nal::UdpBind;
use edge_nal_embassy::{Udp, UdpBuffers};
use embassy_futures::select::{select, Either};
use embassy_net::tcp::TcpSocket;
use embassy_net::{IpListenEndpoint, Stack};
use embassy_time::{Duration, Timer};
use embedded_io_async::Write;
use esp_radio::wifi::WifiController;
use esp_storage::FlashStorage;
use log::{info, warn};

use crate::bus::{self, Input};
use crate::parse::{route, RequestError, Route, REQUEST_MAX};

/// The access point's own address; phones get 192.168.4.x from its DHCP server.
pub const AP_ADDRESS: Ipv4Addr = Ipv4Addr::new(192, 168, 4, 1);

/// How long the setup access point stays open after power-up.
pub const AP_OPEN: Duration = Duration::from_secs(10 * 60);

/// The label of the partition holding the setup secret (`partitions-*.csv`).
const SECRET_LABEL: &str = "setup";

/// The setup access point's password.
pub type Password = heapless::String<PASSWORD_MAX>;

/// Why the door has no setup password, so no setup access point.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SecretError {
    /// The partition table cannot be read.
    Table,
    /// The table has no partition labelled `setup` large enough for a record.
    NoPartition,
    /// Reading the partition failed.
    Read,
    /// The partition holds no usable secret.
    Secret(SetupSecretError),
}

impl core::fmt::Display for SecretError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            SecretError::Table => f.write_str("the partition table cannot be read"),
            SecretError::NoPartition => {
                f.write_str("the partition table has no partition labelled setup")
            }
            SecretError::Read => f.write_str("the setup partition cannot be read"),
            SecretError::Secret(e) => write!(f, "the setup partition: {e}"),
        }
    }
}

/// The setup access point's password from the `setup` partition, checked (magic, version, CRC,
/// a 16 to 63 character passphrase). Called before the store takes the flash; only reads.
pub fn read_secret(flash: &mut FlashStorage<'_>) -> Result<Password, SecretError> {
    let mut buf = [0u8; esp_bootloader_esp_idf::partitions::PARTITION_TABLE_MAX_LEN];
    let table = esp_bootloader_esp_idf::partitions::read_partition_table(flash, &mut buf)
        .map_err(|_| SecretError::Table)?;
    // By label alone: `store::open` checks the whole table (types, subtypes, offsets) before
    // the door uses the flash, and the record carries its own magic and CRC. Never through
    // `partition_type()`, which panics on subtypes it does not know.
    let offset = table
        .iter()
        .find(|p| p.label_as_str() == SECRET_LABEL && p.len() as usize >= SECRET_LEN)
        .ok_or(SecretError::NoPartition)?
        .offset();
    let mut record = [0u8; SECRET_LEN];
    flash
        .read(offset, &mut record)
        .map_err(|_| SecretError::Read)?;
    setup::decode_setup_secret(&record).map_err(SecretError::Secret)
}

/// Keeps the access point's controller alive and logs phones joining; after [`AP_OPEN`] it
/// drops the controller, which stops the radio: the access point is gone until the next
/// power-up (holding BOOT, or still unprovisioned).
#[embassy_executor::task]
pub async fn ap_task(wifi: WifiController<'static>) -> ! {
    let closing = embassy_time::Instant::now() + AP_OPEN;
    loop {
        match select(
            wifi.wait_for_access_point_connected_event_async(),
            Timer::at(closing),
        )
        .await
        {
            Either::First(Ok(event)) => info!("setup access point: {event:?}"),
            Either::First(Err(e)) => {
                warn!("setup access point: {e:?}");
                Timer::after(Duration::from_secs(1)).await;
            }
            Either::Second(()) => break,
        }
    }
    drop(wifi);
    info!("setup access point closed; power-cycle holding BOOT to open it again");
    loop {
        Timer::after(Duration::from_secs(3600)).await;
    }
}

/// Hands out addresses to phones on the setup access point.
#[embassy_executor::task]
pub async fn dhcp_task(stack: Stack<'static>) -> ! {
    let buffers = UdpBuffers::<2, 1024, 1024, 4>::new();
    let udp = Udp::new(stack, &buffers);
    let mut buf = [0u8; 1500];
    let mut gateways = [AP_ADDRESS];
    loop {
        let bound = udp
            .bind(core::net::SocketAddr::V4(SocketAddrV4::new(
                Ipv4Addr::UNSPECIFIED,
                DEFAULT_SERVER_PORT,
            )))
            .await;
        match bound {
            Ok(mut socket) => {
                let r = dhcp_io::server::run(
                    &mut DhcpServer::<_, 8>::new_with_et(AP_ADDRESS),
                    &ServerOptions::new(AP_ADDRESS, Some(&mut gateways)),
                    &mut socket,
                    &mut buf,
                )
                .await;
                if let Err(e) = r {
                    warn!("DHCP server: {e:?}");
                }
            }
            Err(e) => warn!("DHCP socket: {e:?}"),
        }
        Timer::after(Duration::from_secs(1)).await;
    }
}

/// Serves the setup page on port 80, one phone at a time.
#[embassy_executor::task]
pub async fn http_task(stack: Stack<'static>) -> ! {
    let mut rx = [0u8; 1536];
    let mut tx = [0u8; 1536];
    let mut req = [0u8; REQUEST_MAX];
    loop {
        let mut socket = TcpSocket::new(stack, &mut rx, &mut tx);
        socket.set_timeout(Some(Duration::from_secs(10)));
        if socket
            .accept(IpListenEndpoint {
                addr: None,
                port: 80,
            })
            .await
            .is_err()
        {
            continue;
        }
        let mut n = 0;
        let routed = loop {
            if let Some(r) = route(&req[..n]) {
                break r;
            }
            if n == req.len() {
                break Err(RequestError::TooLarge);
            }
            match socket.read(&mut req[n..]).await {
                Ok(0) | Err(_) => break Err(RequestError::Io),
                Ok(got) => n += got,
            }
        };
        let at = bus::now();
        let mut restart = false;
        let _ = match routed {
            Ok(Route::Page) => respond(&mut socket, "200 OK", setup::PAGE).await,
            Ok(Route::Submit(body)) => {
                let mut page: heapless::String<1024> = heapless::String::new();
                match setup::parse_form(body) {
                    Ok(form) => {
                        accept(&form, at).await;
                        let _ = setup::write_answer(&mut page, Ok(&form));
                        restart = true;
                    }
                    Err(e) => {
                        info!("setup form refused: {e}");
                        let _ = setup::write_answer(&mut page, Err(&e));
                    }
                }
                respond(&mut socket, "200 OK", &page).await
            }
            Ok(Route::Elsewhere) => redirect(&mut socket).await,
            Err(RequestError::TooLarge) => respond(&mut socket, "413 Payload Too Large", "").await,
            Err(_) => Ok(()),
        };
        socket.close();
        let _ = socket.flush().await;
        Timer::after(Duration::from_millis(200)).await;
        socket.abort();
        if restart {
            // Give the door task time to take the phone's time and write the RTC (aligned to the
            // next second), then start over in station mode.
            Timer::after(Duration::from_secs(3)).await;
            info!("setup saved: restarting");
            esp_hal::system::software_reset();
        }
    }
}

/// Hands the form to the door task: the door keeps the settings (a new pairing code pairs it
/// again at the next start, to this server or another) and takes the phone's time.
async fn accept(form: &SetupForm, at: chronolock_core::Instant) {
    bus::input(Input::Setup(form.clone(), at)).await;
}

async fn respond(
    socket: &mut TcpSocket<'_>,
    status: &str,
    body: &str,
) -> Result<(), embassy_net::tcp::Error> {
    let mut head: heapless::String<160> = heapless::String::new();
    let _ = write!(
        head,
        "HTTP/1.1 {status}\r\nContent-Type: text/html; charset=utf-8\r\nContent-Length: {}\r\n\
         Cache-Control: no-store\r\nConnection: close\r\n\r\n",
        body.len()
    );
    socket.write_all(head.as_bytes()).await?;
    socket.write_all(body.as_bytes()).await?;
    socket.flush().await
}

async fn redirect(socket: &mut TcpSocket<'_>) -> Result<(), embassy_net::tcp::Error> {
    socket
        .write_all(
            b"HTTP/1.1 302 Found\r\nLocation: http://192.168.4.1/\r\nContent-Length: 0\r\n\
              Connection: close\r\n\r\n",
        )
        .await?;
    socket.flush().await
}
