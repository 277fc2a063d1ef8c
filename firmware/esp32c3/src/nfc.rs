//! The PN532 NFC reader on I2C (address 0x24, the same bus as the DS3231, shared through a
//! blocking mutex), through the sans-IO frames of [`chronolock_device::pn532`].
//!
//! Every 150 ms the task asks for one ISO 14443-A card. A card that speaks ISO-DEP (NTAG 424
//! DNA, DESFire) is handed to the door as a secure-card candidate; the door then asks for
//! APDUs ([`APDU`]), which go to the card with InDataExchange, their answers back to the door
//! ([`Input::CardResponse`], or [`Input::CardLost`] when the card does not answer). Any other
//! card is handed over by its UID, like a Wiegand card. A card that stays in the field counts
//! once. Without a PN532 (nothing acknowledges at boot) the task parks: Wiegand still works.

use chronolock_device::pn532;
use embassy_embedded_hal::shared_bus::blocking::i2c::I2cDevice;
use embassy_sync::blocking_mutex::raw::CriticalSectionRawMutex;
use embassy_sync::channel::Channel;
use embassy_time::{with_timeout, Duration, Timer};
use embedded_hal::i2c::I2c as _;
use esp_hal::i2c::master::I2c;
use esp_hal::Blocking;
use log::{info, warn};

use crate::bus::{self, Input};

/// The I2C bus as the RTC and NFC tasks share it.
pub type SharedI2c = I2cDevice<'static, CriticalSectionRawMutex, I2c<'static, Blocking>>;

/// Largest APDU the door sends (`chronolock_core::card::APDU_MAX`).
pub const APDU_MAX: usize = chronolock_core::card::APDU_MAX;

/// Largest card answer passed back (data and status word).
pub const RESPONSE_MAX: usize = 64;

/// APDUs the door asks to send to the card in the field.
pub static APDU: Channel<CriticalSectionRawMutex, heapless::Vec<u8, APDU_MAX>, 1> = Channel::new();

/// How long the chip may take to acknowledge, and to answer (a card exchange included).
const ACK_WAIT: Duration = Duration::from_millis(30);
const ANSWER_WAIT: Duration = Duration::from_millis(200);

/// Why one command did not complete.
#[derive(Clone, Copy, Debug)]
enum NfcError {
    Bus,
    NoAck,
    Timeout,
    Frame(pn532::FrameError),
}

/// Waits until the chip's status byte says ready, polling every 2 ms up to `wait`.
async fn wait_ready(i2c: &mut SharedI2c, wait: Duration) -> Result<(), NfcError> {
    let mut status = [0u8; 1];
    let polls = wait.as_millis() / 2 + 1;
    for _ in 0..polls {
        if i2c.read(pn532::I2C_ADDRESS, &mut status).is_ok() && pn532::ready(status[0]) {
            return Ok(());
        }
        Timer::after(Duration::from_millis(2)).await;
    }
    Err(NfcError::Timeout)
}

/// Sends one command frame; reads its acknowledgement and its answer into `buf`; returns the
/// answer's data.
async fn command<'b>(
    i2c: &mut SharedI2c,
    cmd: u8,
    frame: &[u8],
    buf: &'b mut [u8; 96],
) -> Result<&'b [u8], NfcError> {
    i2c.write(pn532::I2C_ADDRESS, frame)
        .map_err(|_| NfcError::Bus)?;
    wait_ready(i2c, ACK_WAIT).await?;
    let mut ack = [0u8; 7];
    i2c.read(pn532::I2C_ADDRESS, &mut ack)
        .map_err(|_| NfcError::Bus)?;
    if !pn532::is_ack(&ack[1..]) {
        return Err(NfcError::NoAck);
    }
    wait_ready(i2c, ANSWER_WAIT).await?;
    i2c.read(pn532::I2C_ADDRESS, buf)
        .map_err(|_| NfcError::Bus)?;
    // The status byte first, then the frame.
    pn532::answer(cmd, &buf[1..]).map_err(NfcError::Frame)
}

/// Reads cards; hands them and their APDU answers to the door task.
#[embassy_executor::task]
pub async fn nfc_task(mut i2c: SharedI2c) -> ! {
    let mut frame = [0u8; 96];
    let mut buf = [0u8; 96];
    let present = match pn532::sam_configuration(&mut frame) {
        Ok(n) => command(
            &mut i2c,
            pn532::command::SAM_CONFIGURATION,
            &frame[..n],
            &mut buf,
        )
        .await
        .is_ok(),
        Err(_) => false,
    };
    info!("PN532 {}", if present { "found" } else { "absent" });
    if !present {
        loop {
            // Nothing to read; the door's secure-card checks end at once (no APDU task).
            let _ = APDU.receive().await;
            bus::input(Input::CardLost).await;
        }
    }
    let mut last: heapless::Vec<u8, 10> = heapless::Vec::new();
    loop {
        Timer::after(Duration::from_millis(150)).await;
        let Ok(n) = pn532::list_card(&mut frame) else {
            continue;
        };
        let uid: heapless::Vec<u8, 10> = match command(
            &mut i2c,
            pn532::command::IN_LIST_PASSIVE_TARGET,
            &frame[..n],
            &mut buf,
        )
        .await
        {
            Ok(data) => match pn532::listed_card(data) {
                Ok(Some(card)) => {
                    let uid = heapless::Vec::from_slice(card.uid).unwrap_or_default();
                    if uid == last {
                        continue;
                    }
                    last = uid.clone();
                    if !card.iso_dep() {
                        bus::input(Input::NfcCard(uid)).await;
                        continue;
                    }
                    uid
                }
                Ok(None) => {
                    last.clear();
                    continue;
                }
                Err(e) => {
                    warn!("PN532: card list unreadable: {e:?}");
                    continue;
                }
            },
            Err(NfcError::Timeout) => {
                last.clear();
                continue;
            }
            Err(NfcError::Frame(f)) => {
                warn!("PN532: a frame that does not check out: {f:?}");
                continue;
            }
            Err(e) => {
                warn!("PN532: {e:?}");
                continue;
            }
        };
        bus::input(Input::SecureCard(uid)).await;
        // The door's check: APDUs until it stops asking.
        while let Ok(apdu) = with_timeout(Duration::from_millis(300), APDU.receive()).await {
            let answer = match pn532::exchange(1, &apdu, &mut frame) {
                Ok(n) => command(
                    &mut i2c,
                    pn532::command::IN_DATA_EXCHANGE,
                    &frame[..n],
                    &mut buf,
                )
                .await
                .ok()
                .and_then(|data| pn532::exchanged(data).ok())
                .and_then(|r| heapless::Vec::<u8, RESPONSE_MAX>::from_slice(r).ok()),
                Err(_) => None,
            };
            match answer {
                Some(r) => bus::input(Input::CardResponse(r)).await,
                None => {
                    bus::input(Input::CardLost).await;
                    break;
                }
            }
        }
    }
}
