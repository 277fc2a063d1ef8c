//! chronolock door controller firmware for the ESP32-C3.
//!
//! A thin shell around the shared [`chronolock_device::door::Door`]: `main` sets up the
//! peripherals, boots the door from what flash keeps and spawns one task per piece of I/O. The
//! door task ([`door`]) is the only one that talks to the door; the others ([`reader`], [`nfc`], [`rtc`],
//! [`board`], [`net`], [`setup`]) carry packets, pulses and pin levels through the channels in
//! [`bus`]. Nothing here decides who may enter or which time to trust.
//!
//! Boot: the setup button (GPIO9, BOOT) held, or no settings yet → setup mode (own access point
//! and setup page, [`setup`]); otherwise → station mode (Wi-Fi, NTP, backend sync, [`net`]).

#![no_std]
#![no_main]

mod board;
mod bus;
mod door;
mod http;
mod liveness;
mod net;
mod nfc;
mod ota;
mod parse;
mod reader;
mod rtc;
mod setup;
mod store;
mod watchdog;

use chronolock_core::Config;
use chronolock_device::door::{BootConfig, Door};
use embassy_executor::Spawner;
use embassy_net::{Ipv4Cidr, StackResources, StaticConfigV4};
use esp_backtrace as _;
use esp_hal::analog::adc::{Adc, AdcCalCurve, AdcConfig, Attenuation};
use esp_hal::clock::CpuClock;
use esp_hal::gpio::{Input, InputConfig, Io, Level, Output, OutputConfig, Pull};
use esp_hal::i2c::master::{Config as I2cConfig, I2c};
use esp_hal::rng::Rng;
use esp_hal::time::Rate;
use esp_hal::timer::timg::TimerGroup;
use esp_radio::wifi::ap::AccessPointConfig;
use esp_radio::wifi::sta::StationConfig;
use esp_radio::wifi::{
    AuthenticationMethodConfig, Config as WifiConfig, ControllerConfig, Interface, WifiController,
};
use esp_storage::FlashStorage;
use log::{error, info, warn};
use static_cell::StaticCell;

use crate::board::{Battery, Indicators};
use crate::http::{Buffers, Server};
use crate::net::{Backend, BackendBuffers, WatchBuffers, Watcher};

esp_bootloader_esp_idf::esp_app_desc!();

/// The door: controller, flash, exchanges.
static DOOR: StaticCell<door::FirmwareDoor> = StaticCell::new();
/// The I2C bus the DS3231 and the PN532 share.
static I2C_BUS: StaticCell<
    embassy_sync::blocking_mutex::Mutex<
        embassy_sync::blocking_mutex::raw::CriticalSectionRawMutex,
        core::cell::RefCell<I2c<'static, esp_hal::Blocking>>,
    >,
> = StaticCell::new();
/// The IP stack's sockets: DHCP, DNS, NTP, the exchanges' TCP, the watch's TCP, spare.
static NET_RESOURCES: StaticCell<StackResources<6>> = StaticCell::new();
/// The server's address, shared by the backend and watch tasks.
static SERVER: StaticCell<Option<Server>> = StaticCell::new();
/// The backend task's socket buffers.
static HTTP_BUFFERS: StaticCell<BackendBuffers> = StaticCell::new();
/// The watch task's socket buffers (a watch is tiny).
static WATCH_BUFFERS: StaticCell<WatchBuffers> = StaticCell::new();

#[esp_hal::main]
async fn main(spawner: Spawner) -> ! {
    esp_println::logger::init_logger_from_env();
    let peripherals = esp_hal::init(esp_hal::Config::default().with_cpu_clock(CpuClock::max()));
    // Wi-Fi's buffers: part in the RAM the bootloader used, part in ordinary RAM.
    esp_alloc::heap_allocator!(#[esp_hal::ram(reclaimed)] size: 64 * 1024);
    esp_alloc::heap_allocator!(size: 16 * 1024);

    let timg0 = TimerGroup::new(peripherals.TIMG0);
    let timg1 = TimerGroup::new(peripherals.TIMG1);
    esp_rtos::start(timg0.timer0, peripherals.FROM_CPU_INTR0);

    // ----- pins (README: pin map) ----------------------------------------------------------
    let pull_up = InputConfig::default().with_pull(Pull::Up);
    let mut io = Io::new(peripherals.IO_MUX);
    io.set_interrupt_handler(reader::gpio_interrupt);
    let d0 = Input::new(peripherals.GPIO0, pull_up);
    let d1 = Input::new(peripherals.GPIO1, pull_up);
    let setup_button = Input::new(peripherals.GPIO9, pull_up);
    let contact = Input::new(peripherals.GPIO19, pull_up);
    // A strapping pin, but one SPI boot ignores: an exit button held at power-up changes nothing.
    let exit_button = Input::new(peripherals.GPIO8, pull_up);
    let relay = Output::new(peripherals.GPIO6, Level::Low, OutputConfig::default());
    let indicators = Indicators {
        green: Output::new(peripherals.GPIO7, Level::Low, OutputConfig::default()),
        red: Output::new(peripherals.GPIO10, Level::Low, OutputConfig::default()),
        buzzer: Output::new(peripherals.GPIO18, Level::Low, OutputConfig::default()),
    };
    let i2c = I2c::new(
        peripherals.I2C0,
        I2cConfig::default().with_frequency(Rate::from_khz(100)),
    )
    .expect("I2C0 with a constant configuration")
    .with_sda(peripherals.GPIO4)
    .with_scl(peripherals.GPIO5);
    let mut adc_config = AdcConfig::new();
    let battery_pin =
        adc_config.enable_pin_with_cal::<_, AdcCalCurve<_>>(peripherals.GPIO3, Attenuation::_11dB);
    let battery = Battery::new(Adc::new(peripherals.ADC1, adc_config), battery_pin);

    let setup_held = setup_button.is_low();

    // ----- the door: everything flash keeps, read once ------------------------------------
    let mut flash = FlashStorage::new(peripherals.FLASH);
    // The setup password, read before the store takes the flash (used only in setup mode).
    let setup_secret = setup::read_secret(&mut flash);
    // Which app slot runs, for updates over the air and their trial boots.
    let firmware = ota::firmware_boot(&mut flash);
    let store = match store::open(flash) {
        Ok(s) => s,
        Err(e) => {
            // Fail secure: a door that cannot keep its list, its clock record or its events
            // stays locked and says why.
            error!(
                "flash unusable ({e:?}): the partition table must be {}",
                store::TABLE
            );
            loop {
                bus::FEEDBACK.signal(chronolock_core::controller::Feedback::Denied);
                embassy_time::Timer::after(embassy_time::Duration::from_secs(10)).await;
            }
        }
    };
    let mut seed = [0u8; 32];
    Rng::new().read(&mut seed);
    let config = BootConfig {
        core: Config::default(),
        sync_interval_s: None,
        setup_button: setup_held,
        firmware,
    };
    let door = DOOR.init(Door::boot(store, config, seed, bus::now()));
    let settings = door.settings().clone();
    // Only for a door with no settings yet or with BOOT held, never after a flash read error.
    let setup_mode = door.setup_access_point();
    if !setup_mode && settings.ssid.is_empty() {
        error!("settings unreadable: no setup access point; the door decides offline");
    }
    if let Some(info) = door.list_info() {
        info!("list generation {} active", info.generation);
    }
    spawner.spawn(door::door_task(door, battery).expect("door task spawned once"));
    watchdog::door_beat();
    spawner.spawn(watchdog::watchdog_task(timg1.wdt).expect("watchdog task spawned once"));

    // ----- I/O tasks -----------------------------------------------------------------------
    let i2c_bus = I2C_BUS.init(embassy_sync::blocking_mutex::Mutex::new(
        core::cell::RefCell::new(i2c),
    ));
    spawner.spawn(rtc::rtc_task(nfc::SharedI2c::new(i2c_bus)).expect("RTC task spawned once"));
    spawner.spawn(nfc::nfc_task(nfc::SharedI2c::new(i2c_bus)).expect("NFC task spawned once"));
    reader::start(d0, d1);
    spawner.spawn(reader::reader_task().expect("reader task spawned once"));
    spawner.spawn(board::lock_task(relay).expect("lock task spawned once"));
    spawner.spawn(board::feedback_task(indicators).expect("feedback task spawned once"));
    spawner.spawn(board::contact_task(contact).expect("contact task spawned once"));
    spawner.spawn(board::rex_task(exit_button).expect("exit button task spawned once"));

    // ----- network -------------------------------------------------------------------------
    let net_seed = (u64::from(Rng::new().random()) << 32) | u64::from(Rng::new().random());
    let resources = NET_RESOURCES.init(StackResources::new());
    // In setup mode, the door's own WPA2 password; without one, no access point at all.
    let setup_auth = if setup_mode {
        info!("setup mode");
        setup_access_point_auth(&setup_secret)
    } else {
        None
    };
    if let Some((ssid, auth)) = setup_auth {
        let interface = Interface::access_point();
        let ap = WifiConfig::AccessPoint(
            AccessPointConfig::default()
                .with_ssid(ssid.as_str().try_into().expect("a 15-character SSID"))
                .with_authentication(auth),
        );
        let wifi = WifiController::new(
            peripherals.WIFI,
            ControllerConfig::default().with_initial_config(ap),
        )
        .expect("Wi-Fi starts as an access point");
        let ip = embassy_net::Config::ipv4_static(StaticConfigV4 {
            address: Ipv4Cidr::new(setup::AP_ADDRESS, 24),
            gateway: Some(setup::AP_ADDRESS),
            dns_servers: Default::default(),
        });
        let (stack, runner) = embassy_net::new(interface, ip, resources, net_seed);
        info!("join Wi-Fi {ssid} and open http://{}/", setup::AP_ADDRESS);
        spawner.spawn(net::net_task(runner).expect("net task spawned once"));
        spawner.spawn(setup::ap_task(wifi).expect("AP task spawned once"));
        info!(
            "the setup access point closes after {} minutes",
            setup::AP_OPEN.as_secs() / 60
        );
        spawner.spawn(setup::dhcp_task(stack).expect("DHCP task spawned once"));
        spawner.spawn(setup::http_task(stack).expect("HTTP task spawned once"));
    } else if setup_mode {
        // Logged by setup_access_point_auth: no network until the door is flashed again.
    } else if let Some(auth) = station_auth(&settings.password) {
        info!("station mode: joining {}", settings.ssid);
        let station = StationConfig::default()
            .with_ssid(settings.ssid.as_str().try_into().unwrap_or_default())
            .with_authentication(auth);
        let wifi = WifiController::new(
            peripherals.WIFI,
            ControllerConfig::default().with_initial_config(WifiConfig::Station(station)),
        )
        .expect("Wi-Fi starts as a station");
        let (stack, runner) = embassy_net::new(
            Interface::station(),
            embassy_net::Config::dhcpv4(Default::default()),
            resources,
            net_seed,
        );
        let server = SERVER
            .init(match Server::parse(&settings.server_url) {
                Ok(s) => Some(s),
                Err(e) => {
                    warn!("server address unusable: {e:?}");
                    None
                }
            })
            .as_ref();
        let backend = Backend {
            stack,
            server,
            bufs: HTTP_BUFFERS.init(Buffers::new()),
        };
        let watcher = Watcher {
            stack,
            server,
            bufs: WATCH_BUFFERS.init(Buffers::new()),
        };
        spawner.spawn(net::net_task(runner).expect("net task spawned once"));
        spawner.spawn(net::wifi_task(wifi, stack).expect("Wi-Fi task spawned once"));
        spawner.spawn(net::ntp_task(stack).expect("NTP task spawned once"));
        spawner.spawn(net::backend_task(backend).expect("backend task spawned once"));
        spawner.spawn(net::watch_task(watcher).expect("watch task spawned once"));
    } else {
        // Never an open network in place of a password that does not fit: no Wi-Fi at all
        // (the door decides offline from its list) until setup gives a good one.
        error!("Wi-Fi password unusable: not joining; hold BOOT at power-up to set it again");
    }

    loop {
        embassy_time::Timer::after(embassy_time::Duration::from_secs(3600)).await;
    }
}

/// The setup access point's name and WPA2 authentication from the door's setup secret, or
/// `None` (and why, on the console) when it has none: a door without its secret opens no access
/// point, never an open one. The password itself is never logged.
fn setup_access_point_auth(
    secret: &Result<setup::Password, setup::SecretError>,
) -> Option<(heapless::String<32>, AuthenticationMethodConfig)> {
    let password = match secret {
        Ok(p) => p,
        Err(e) => {
            error!(
                "no setup access point: {e}; flash the door with scripts/flash.sh, which writes \
                 its setup secret (until then it decides offline from its list)"
            );
            return None;
        }
    };
    match password.as_str().try_into() {
        Ok(p) => Some((
            chronolock_device::setup::setup_ssid(password),
            AuthenticationMethodConfig::Wpa2Personal(p),
        )),
        Err(_) => {
            error!("no setup access point: the radio refuses the setup password's length");
            None
        }
    }
}

/// How to join the door's network: open for an empty password, WPA2 for a passphrase;
/// `None` for a password the radio cannot take (setup refuses those; this is the last guard).
fn station_auth(password: &str) -> Option<AuthenticationMethodConfig> {
    if password.is_empty() {
        return Some(AuthenticationMethodConfig::Open);
    }
    if !chronolock_device::setup::is_passphrase(password) {
        return None;
    }
    password
        .try_into()
        .ok()
        .map(AuthenticationMethodConfig::WpaWpa2Personal)
}
