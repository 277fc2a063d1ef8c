//! chronolock door controller firmware for the ESP32-C3.
//!
//! A thin shell around [`chronolock_core::Controller`]: `main` sets up the peripherals, reads
//! what flash keeps, boots the controller and spawns one task per piece of I/O. The door task
//! ([`door`]) is the only one that talks to the controller; the others ([`reader`], [`rtc`],
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
mod net;
mod parse;
mod reader;
mod rtc;
mod setup;
mod store;

use core::time::Duration as CoreDuration;

use chronolock_core::allowlist::AllowList;
use chronolock_core::{protocol, Config, Controller, Instant};
use ed25519_dalek::VerifyingKey;
use embassy_executor::Spawner;
use embassy_net::{Ipv4Cidr, StackResources, StaticConfigV4};
use embassy_sync::mutex::Mutex;
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
use log::{info, warn};
use static_cell::StaticCell;

use crate::board::{Battery, Indicators};
use crate::door::{Door, LIST_RAM};
use crate::http::{Buffers, Server};
use crate::store::{SharedStore, Store};

esp_bootloader_esp_idf::esp_app_desc!();

/// The flash, shared by the door task (records, list install) and the backend task (outbox,
/// list download).
static STORE: StaticCell<SharedStore> = StaticCell::new();
/// The active allow-list's bytes.
static LIST: StaticCell<[u8; LIST_RAM]> = StaticCell::new();
/// The IP stack's sockets: DHCP, DNS, NTP, one TCP exchange, spare.
static NET_RESOURCES: StaticCell<StackResources<6>> = StaticCell::new();
/// The backend client's socket buffers.
static HTTP_BUFFERS: StaticCell<Buffers> = StaticCell::new();

#[esp_hal::main]
async fn main(spawner: Spawner) -> ! {
    esp_println::logger::init_logger_from_env();
    let peripherals = esp_hal::init(esp_hal::Config::default().with_cpu_clock(CpuClock::max()));
    // Wi-Fi's buffers: part in the RAM the bootloader used, part in ordinary RAM.
    esp_alloc::heap_allocator!(#[esp_hal::ram(reclaimed)] size: 64 * 1024);
    esp_alloc::heap_allocator!(size: 16 * 1024);

    let timg0 = TimerGroup::new(peripherals.TIMG0);
    esp_rtos::start(timg0.timer0, peripherals.FROM_CPU_INTR0);

    // ----- pins (README: pin map) ----------------------------------------------------------
    let pull_up = InputConfig::default().with_pull(Pull::Up);
    let mut io = Io::new(peripherals.IO_MUX);
    io.set_interrupt_handler(reader::gpio_interrupt);
    let d0 = Input::new(peripherals.GPIO0, pull_up);
    let d1 = Input::new(peripherals.GPIO1, pull_up);
    let setup_button = Input::new(peripherals.GPIO9, pull_up);
    let contact = Input::new(peripherals.GPIO19, pull_up);
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

    // ----- what flash keeps ----------------------------------------------------------------
    let store: &'static SharedStore =
        STORE.init(Mutex::new(Store::new(FlashStorage::new(peripherals.FLASH))));
    let list = LIST.init([0; LIST_RAM]);
    let (settings, identity, persisted, boot) = {
        let mut s = store.lock().await;
        let settings = s.settings().await.unwrap_or_else(|e| {
            warn!("settings unreadable: {e:?}");
            None
        });
        let identity = s.identity().await.unwrap_or_else(|e| {
            warn!("identity unreadable: {e:?}");
            None
        });
        let persisted = s.persisted().await.unwrap_or_default();
        let boot = s.next_boot().await.unwrap_or(0);
        (settings, identity, persisted, boot)
    };

    // ----- the controller ------------------------------------------------------------------
    let mut cfg = Config::default();
    if let Some(id) = &identity {
        cfg.site_key = Some(id.site_key);
        if id.sync_interval_s > 0 {
            cfg.backend_sync_interval = CoreDuration::from_secs(u64::from(id.sync_interval_s));
        }
    }
    let ntp_servers = cfg.ntp_servers.clone();
    let mut seed = [0u8; 32];
    Rng::new().read(&mut seed);
    let mut ctl = Controller::new(cfg, persisted, seed, bus::now());
    let setup_mode = setup_held || settings.is_none();
    if setup_held {
        ctl.set_setup_mode(true);
    }
    if let Some(id) = &identity {
        ctl.set_list_key(Some(protocol::list_key(&id.device_key)));
    }
    {
        let mut s = store.lock().await;
        if let Err(e) = s.keypad_uses(|u| ctl.restore_keypad_use(u)).await {
            warn!("keypad uses unreadable: {e:?}");
        }
        // The active list, checked against the site key it was installed under.
        let site = identity.and_then(|id| VerifyingKey::from_bytes(&id.site_key).ok());
        let mut list_len = None;
        if let (Some(site), Ok(Some(active))) = (site, s.active_list()) {
            if let Ok(bytes) = s.read_list(&active, &mut list[..]) {
                match AllowList::verify(bytes, &site) {
                    Ok(l) => {
                        ctl.allowlist_installed(l.info(), Instant::ZERO);
                        list_len = Some(bytes.len());
                        info!("list generation {} active", l.info().generation);
                    }
                    Err(e) => warn!("list in flash refused: {}", e.as_str()),
                }
            }
        }
        drop(s);
        let door = Door::new(ctl, store, list, list_len, battery, boot);
        spawner.spawn(door::door_task(door).expect("door task spawned once"));
    }

    // ----- I/O tasks -----------------------------------------------------------------------
    spawner.spawn(rtc::rtc_task(i2c).expect("RTC task spawned once"));
    reader::start(d0, d1);
    spawner.spawn(reader::reader_task().expect("reader task spawned once"));
    spawner.spawn(board::lock_task(relay).expect("lock task spawned once"));
    spawner.spawn(board::feedback_task(indicators).expect("feedback task spawned once"));
    spawner.spawn(board::contact_task(contact).expect("contact task spawned once"));

    // ----- network -------------------------------------------------------------------------
    let net_seed = (u64::from(Rng::new().random()) << 32) | u64::from(Rng::new().random());
    let resources = NET_RESOURCES.init(StackResources::new());
    if setup_mode {
        info!("setup mode");
        let interface = Interface::access_point();
        let mac = interface.mac_address();
        let mut ssid: heapless::String<32> = heapless::String::new();
        let _ = core::fmt::write(
            &mut ssid,
            format_args!("chronolock-{:02X}{:02X}", mac[4], mac[5]),
        );
        let ap = WifiConfig::AccessPoint(
            AccessPointConfig::default()
                .with_ssid(ssid.as_str().try_into().expect("a 15-character SSID"))
                .with_authentication(AuthenticationMethodConfig::Open),
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
        spawner.spawn(setup::dhcp_task(stack).expect("DHCP task spawned once"));
        spawner.spawn(setup::http_task(stack, store).expect("HTTP task spawned once"));
    } else if let Some(settings) = settings {
        info!("station mode: joining {}", settings.ssid);
        let auth = if settings.password.is_empty() {
            AuthenticationMethodConfig::Open
        } else {
            match settings.password.as_str().try_into() {
                Ok(p) => AuthenticationMethodConfig::WpaWpa2Personal(p),
                Err(_) => AuthenticationMethodConfig::Open,
            }
        };
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
        let server = match Server::parse(&settings.server_url) {
            Ok(s) => Some(s),
            Err(e) => {
                warn!("server address unusable: {e:?}");
                None
            }
        };
        let backend = net::Backend {
            stack,
            store,
            server,
            pairing_code: settings.pairing_code.clone(),
            identity,
            bufs: HTTP_BUFFERS.init(Buffers::new()),
        };
        spawner.spawn(net::net_task(runner).expect("net task spawned once"));
        spawner.spawn(net::wifi_task(wifi, stack).expect("Wi-Fi task spawned once"));
        spawner.spawn(net::ntp_task(stack, ntp_servers).expect("NTP task spawned once"));
        spawner.spawn(net::backend_task(backend).expect("backend task spawned once"));
    }

    loop {
        embassy_time::Timer::after(embassy_time::Duration::from_secs(3600)).await;
    }
}
