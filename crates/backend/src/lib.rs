//! The backend's side of the device protocol ([`chronolock_core::protocol`],
//! `docs/protocol.md`), sans IO: given a request's bytes and a [`Devices`] store, what the
//! server stores and answers. The HTTP server runs it over its SQL database; the fleet
//! simulation runs the very same code over doors kept in memory, in virtual time, so the doors
//! it simulates exchange real protocol bytes with the server's logic.
//!
//! [`memory::MemoryDevices`] keeps doors in memory for shells without a database.
//!
//! Nothing here reads a clock or an RNG: the caller passes the receive time, a clock for the
//! transmit time, and randomness for enrolment.

pub mod memory;

use chronolock_core::controller::Credential;
use chronolock_core::lockdown::{LockdownOrder, ORDER_LEN};
use chronolock_core::protocol::{
    self, CheckRequest, DeviceStatus, DoorPosition, EnrolRequest, FirmwareOffer, Header, Kind,
    ListStream, ProtocolError, SyncAnswer, SyncRequest, WatchRequest, WireEvent,
    FIRMWARE_CHUNK_MAX,
};
use ed25519_dalek::SigningKey;

/// Why a request was refused, as an HTTP status and a one-line reason.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceError {
    /// 400 malformed, 401 unknown device or failed authentication, 403 unknown or expired
    /// pairing code, 409 the code was used meanwhile or the request is replayed (its counter is
    /// not newer), 500 the store failed.
    pub status: u16,
    /// What is wrong.
    pub reason: String,
}

impl DeviceError {
    fn new(status: u16, reason: impl Into<String>) -> Self {
        DeviceError {
            status,
            reason: reason.into(),
        }
    }

    /// The store failed (details for the log, not the device).
    pub fn internal(detail: impl core::fmt::Display) -> Self {
        DeviceError::new(500, detail.to_string())
    }
}

impl From<ProtocolError> for DeviceError {
    fn from(e: ProtocolError) -> Self {
        let status = match e {
            ProtocolError::BadMac => 401,
            ProtocolError::Replayed => 409,
            _ => 400,
        };
        DeviceError::new(status, e.to_string())
    }
}

impl core::fmt::Display for DeviceError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "{} {}", self.status, self.reason)
    }
}

/// A door waiting to be paired with a one-time code.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pairing {
    /// The door.
    pub door_id: i64,
    /// SHA-256 of the code.
    pub code_hash: [u8; 32],
    /// Seconds between syncs the door is told.
    pub sync_interval_s: u32,
}

/// What the backend knows of a door's list.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DoorList<L> {
    /// The door's current list generation.
    pub generation: u64,
    /// Seconds between syncs.
    pub sync_interval_s: u32,
    /// The list's bytes, when the door's generation is older than `generation`.
    pub list: Option<L>,
    /// The site's NTP servers, separated by spaces (`""`: the site names none, and its doors
    /// keep their own).
    pub ntp_servers: String,
    /// The site's latest lockdown order, as signed when it was given (`None`: never).
    pub lockdown: Option<[u8; ORDER_LEN]>,
    /// The door's contact and held-open time (`None`: the door keeps its own).
    pub position: Option<DoorPosition>,
}

/// The doors, as the backend keeps them. Each method is one step of an exchange; the server
/// implements them with SQL, the fleet simulation in memory.
#[allow(async_fn_in_trait)]
pub trait Devices {
    /// The list bytes a sync hands out (shared, not copied, where the store can).
    type List: AsRef<[u8]>;

    /// Doors with a pairing code that has not expired at `now_unix`.
    async fn pending_pairings(&self, now_unix: i64) -> Result<Vec<Pairing>, DeviceError>;

    /// Spends the pairing's code and keeps the new device key; false when the code was spent
    /// meanwhile (by another request or server process).
    async fn claim_pairing(
        &self,
        pairing: &Pairing,
        device_key: [u8; 32],
        now_unix: i64,
    ) -> Result<bool, DeviceError>;

    /// A paired door's device key.
    async fn device_key(&self, door_id: i64) -> Result<Option<[u8; 32]>, DeviceError>;

    /// A request failed authentication under `stale`, the key [`Devices::device_key`] gave: the
    /// door's key if the store now holds another (a store that caches keys and whose door was
    /// paired again elsewhere a moment ago), else `None`.
    async fn reload_key(
        &self,
        door_id: i64,
        stale: &[u8; 32],
    ) -> Result<Option<[u8; 32]>, DeviceError> {
        let _ = (door_id, stale);
        Ok(None)
    }

    /// Keeps `counter` as the door's newest if it is above the one kept (atomically, even with
    /// several server processes); false when it is not: the request is a replay or out of order.
    /// Pairing starts the door's counter again from 0.
    async fn advance_counter(&self, door_id: i64, counter: u64) -> Result<bool, DeviceError>;

    /// Stores a sync's events, once per (door, event id), before they are acknowledged.
    async fn store_events(
        &self,
        door_id: i64,
        events: &[WireEvent],
        received_us: i64,
    ) -> Result<(), DeviceError>;

    /// A sync's counter and events together: advances the counter as
    /// [`advance_counter`](Devices::advance_counter) does and, only if it was newer, stores the
    /// events as [`store_events`](Devices::store_events) does. A store may do both in one
    /// transaction, shared with other doors' requests (the server's group commit).
    async fn accept(
        &self,
        door_id: i64,
        counter: u64,
        events: Vec<WireEvent>,
        received_us: i64,
    ) -> Result<bool, DeviceError> {
        if !self.advance_counter(door_id, counter).await? {
            return Ok(false);
        }
        if !events.is_empty() {
            self.store_events(door_id, &events, received_us).await?;
        }
        Ok(true)
    }

    /// Keeps what a sync says of the door (its clock, list, battery).
    fn record_status(&self, door_id: i64, status: &DeviceStatus, received_us: i64);

    /// The door's list generation, sync interval and, if `device_generation` is older, its list.
    async fn door_list(
        &self,
        door_id: i64,
        device_generation: u64,
    ) -> Result<DoorList<Self::List>, DeviceError>;

    /// The signed firmware image the admin assigned to this door, if any (`chronolock
    /// firmware sign`'s output). A door that runs it, or a newer one, is offered nothing.
    async fn door_firmware(&self, door_id: i64) -> Result<Option<Vec<u8>>, DeviceError> {
        let _ = door_id;
        Ok(None)
    }

    /// Whether a CONDITIONAL credential may enter at this door now.
    async fn conditional_granted(
        &self,
        door_id: i64,
        credential: &Credential,
        now_unix: i64,
    ) -> Result<bool, DeviceError>;
}

fn expect_kind(body: &[u8], kind: Kind) -> Result<Header, DeviceError> {
    let header = Header::read(body)?;
    if header.kind != kind {
        return Err(ProtocolError::UnexpectedKind(header.kind as u8).into());
    }
    Ok(header)
}

/// `POST /device/v1/enrol`: a door proves a pending pairing code; both ends derive its device
/// key; the code is spent once, even with several server processes.
pub async fn enrol<D: Devices>(
    devices: &D,
    site_public_key: &[u8; 32],
    body: &[u8],
    now_unix: i64,
    random: [u8; 32],
) -> Result<(Vec<u8>, i64), DeviceError> {
    expect_kind(body, Kind::EnrolRequest)?;
    let request = EnrolRequest::parse(body)?;
    let pending = devices.pending_pairings(now_unix).await?;
    let proven = pending
        .into_iter()
        .find_map(|p| request.open(&p.code_hash).map(|public| (p, public)));
    let Some((pairing, device_public)) = proven else {
        return Err(DeviceError::new(403, "unknown or expired pairing code"));
    };
    let (answer, device_key) = request.answer(
        device_public,
        random,
        &pairing.code_hash,
        pairing.door_id as u64,
        site_public_key,
        pairing.sync_interval_s.max(1),
    )?;
    if !devices
        .claim_pairing(&pairing, device_key, now_unix)
        .await?
    {
        return Err(DeviceError::new(
            409,
            "this pairing code was used meanwhile",
        ));
    }
    Ok((answer.to_vec(), pairing.door_id))
}

async fn door_key<D: Devices>(devices: &D, door_id: u64) -> Result<[u8; 32], DeviceError> {
    let unknown = || DeviceError::new(401, "unknown device");
    let door_id = i64::try_from(door_id).map_err(|_| unknown())?;
    devices.device_key(door_id).await?.ok_or_else(unknown)
}

/// Authenticates and decrypts a paired door's request; returns it in clear and the door's key.
async fn open<D: Devices>(
    devices: &D,
    body: &[u8],
    kind: Kind,
) -> Result<(Vec<u8>, [u8; 32]), DeviceError> {
    let header = expect_kind(body, kind)?;
    let key = door_key(devices, header.door_id).await?;
    let mut message = body.to_vec();
    match protocol::open_request(&mut message, &key) {
        Ok(n) => {
            message.truncate(n);
            Ok((message, key))
        }
        Err(ProtocolError::BadMac) => {
            let door_id = i64::try_from(header.door_id).map_err(|_| ProtocolError::BadMac)?;
            let Some(key) = devices.reload_key(door_id, &key).await? else {
                return Err(ProtocolError::BadMac.into());
            };
            let mut message = body.to_vec();
            let n = protocol::open_request(&mut message, &key)?;
            message.truncate(n);
            Ok((message, key))
        }
        Err(e) => Err(e.into()),
    }
}

/// Refuses a request whose counter is not newer than the door's last, before anything else.
async fn fresh<D: Devices>(devices: &D, door_id: u64, counter: u64) -> Result<(), DeviceError> {
    let door_id = i64::try_from(door_id).map_err(|_| ProtocolError::Malformed("door_id"))?;
    if devices.advance_counter(door_id, counter).await? {
        Ok(())
    } else {
        Err(ProtocolError::Replayed.into())
    }
}

/// `POST /device/v1/sync`: the door's events are stored, its status kept, and the answer
/// carries the time bound to the request's nonce (site-signed unless the door takes link-only
/// times), the acknowledgement, and the list when the door's is older. `transmit_us` is read
/// when the answer is written.
pub async fn sync<D: Devices>(
    devices: &D,
    site: &SigningKey,
    body: &[u8],
    receive_us: i64,
    transmit_us: impl Fn() -> i64,
) -> Result<Vec<u8>, DeviceError> {
    let (message, key) = open(devices, body, Kind::SyncRequest).await?;
    let request = SyncRequest::parse(&message)?;
    let header = request.header;
    let door_id = i64::try_from(header.door_id).map_err(|_| ProtocolError::Malformed("door_id"))?;
    let events: Vec<WireEvent> = request.events().collect();
    // The counter first: a replayed or reordered request stores, records and sends nothing.
    if !devices
        .accept(door_id, request.counter, events, receive_us)
        .await?
    {
        return Err(ProtocolError::Replayed.into());
    }
    devices.record_status(door_id, &request.status, receive_us);
    let door = devices
        .door_list(door_id, request.status.generation)
        .await?;
    let mut list = door.list.as_ref().map(AsRef::as_ref);
    // A list larger than the door can install is not sent: the door would fetch it at every
    // sync and refuse it. It keeps the list it has; the admin is told (the server's door page).
    let capacity = request.status.list_capacity as usize;
    if capacity > 0 && list.is_some_and(|l| l.len() > capacity) {
        list = None;
    }
    // A door that holds the start of this very generation from an interrupted download gets
    // the rest; the answer's length and digest still cover the whole list, which the door
    // checks once it is complete.
    let list_offset = match (request.status.partial_list, list) {
        (Some(p), Some(l)) if p.generation == door.generation && (p.offset as usize) < l.len() => {
            p.offset
        }
        _ => 0,
    };
    // A firmware update for a door that takes them and runs an older version: the next piece,
    // from where the door's interrupted download stopped.
    let image = if request.status.firmware_version != 0 {
        devices.door_firmware(door_id).await?
    } else {
        None
    };
    let firmware = image.as_deref().and_then(|image| {
        let version = chronolock_core::firmware::Header::peek(image)
            .ok()?
            .version
            .0;
        let len = u32::try_from(image.len()).ok()?;
        if version <= request.status.firmware_version {
            return None;
        }
        let offset = match request.status.partial_firmware {
            // The door holds all of it (or refused it): nothing more to send.
            Some(p) if p.version == version && p.offset >= len => return None,
            Some(p) if p.version == version => p.offset,
            _ => 0,
        };
        Some(FirmwareOffer {
            image,
            offset,
            len: (len - offset).min(FIRMWARE_CHUNK_MAX),
        })
    });
    let answer = SyncAnswer {
        door_id: header.door_id,
        nonce: header.nonce,
        receive_us,
        transmit_us: transmit_us().max(receive_us),
        acked: request.event_count,
        sync_interval_s: door.sync_interval_s.max(1),
        generation: door.generation,
        list,
        list_offset,
        ntp_servers: &door.ntp_servers,
        firmware,
        lockdown: door.lockdown.as_ref(),
        position: door.position,
        link_time: request.link_time,
    }
    .write(site, &key);
    let rest = list.map_or(&[][..], |l| &l[list_offset as usize..]);
    let piece = firmware.as_ref().map_or(&[][..], FirmwareOffer::piece);
    let mut out = Vec::with_capacity(answer.len() + rest.len() + piece.len());
    out.extend_from_slice(&answer);
    out.extend_from_slice(rest);
    let list_end = out.len();
    ListStream::new(&key, &header.nonce, list_offset).apply(&mut out[answer.len()..]);
    out.extend_from_slice(piece);
    if let Some(fw) = &firmware {
        ListStream::firmware(&key, &header.nonce, fw.offset).apply(&mut out[list_end..]);
    }
    Ok(out)
}

/// `POST /device/v1/check`: may this CONDITIONAL credential enter now?
pub async fn check<D: Devices>(
    devices: &D,
    body: &[u8],
    now_unix: i64,
) -> Result<Vec<u8>, DeviceError> {
    let (message, key) = open(devices, body, Kind::CheckRequest).await?;
    let request = CheckRequest::parse(&message)?;
    let header = request.header;
    fresh(devices, header.door_id, request.counter).await?;
    let granted = devices
        .conditional_granted(header.door_id as i64, &request.credential, now_unix)
        .await?;
    Ok(request.answer(granted, &key).to_vec())
}

/// A door's watch request (`POST /device/v1/watch`), authenticated: the server holds it until
/// [`due`](Watch::due) or its wait ends, then sends [`answer`](Watch::answer).
#[derive(Clone, Debug)]
pub struct Watch {
    request: WatchRequest,
    key: [u8; 32],
}

/// Opens a watch request: the door must be paired and the request sealed with its key. A watch
/// changes nothing on the server, so it needs no counter; a replayed one only makes the server
/// answer "sync now" or "nothing new" to whoever replayed it.
pub async fn open_watch<D: Devices>(devices: &D, body: &[u8]) -> Result<Watch, DeviceError> {
    let (message, key) = open(devices, body, Kind::WatchRequest).await?;
    let request = WatchRequest::parse(&message)?;
    i64::try_from(request.header.door_id).map_err(|_| ProtocolError::Malformed("door_id"))?;
    Ok(Watch { request, key })
}

impl Watch {
    /// The door.
    pub fn door_id(&self) -> i64 {
        self.request.header.door_id as i64
    }

    /// Whether the backend holds something the door has not heard of: a newer list generation
    /// or a newer lockdown order.
    pub async fn due<D: Devices>(&self, devices: &D) -> Result<bool, DeviceError> {
        let door = devices
            .door_list(self.door_id(), self.request.generation)
            .await?;
        let seq = door.lockdown.as_ref().map_or(0, LockdownOrder::peek_seq);
        Ok(door.generation > self.request.generation || seq > self.request.lockdown_seq)
    }

    /// The answer: `changed` tells the door to sync now.
    pub fn answer(&self, changed: bool) -> Vec<u8> {
        self.request.answer(changed, &self.key).to_vec()
    }
}
