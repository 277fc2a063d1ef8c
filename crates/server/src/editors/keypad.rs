//! Keypad codes of a person: enrol a TOTP secret (shown once as a QR code and as text), issue
//! HOTP backup codes (shown once, printable), remove a code.
//!
//! A user code is one `keypad_users` row that may carry a TOTP secret, a HOTP secret, or both.
//! Enrolling under a new code creates the row; under one of the person's codes that lacks that
//! secret it adds it; replacing an existing secret needs the row's explicit "replace" button,
//! since it makes the old authenticator entry or printed sheet useless. Secrets are 20 random
//! bytes (160 bits, as RFC 4226 §4 R6 recommends), stored base32 without padding, the format
//! the list compiler reads ([`chronolock_allowlist::decode_secret`]).

use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::routing::post;
use axum::{Form, Router};
use chronolock_core::otp;
use maud::{html, Markup, PreEscaped};
use rand::RngCore;

use super::people::refuse;
use super::{
    button_form, confirm_first, editor_page, guard, parse_id, see, show_once, the_site, Fields,
    UiError, UiResult,
};
use crate::auth::Admin;
use crate::directory::Site;
use crate::directory::{self, KeypadCode, Person, SecretKind};
use crate::model::{self, KeypadSpec, ModelError};
use crate::AppState;

pub(super) fn routes() -> Router<AppState> {
    Router::new()
        .route("/people/{id}/keypad", post(enrol))
        .route("/people/{id}/keypad/{code}/delete", post(remove))
}

/// Digits of every code issued here.
const DIGITS: u8 = 6;
/// TOTP period issued here, seconds.
const PERIOD_S: u32 = 30;
/// How many backup codes a sheet has (the device's HOTP look-ahead window covers them all).
pub const BACKUP_CODES: u64 = 10;
/// Issuer shown by authenticator apps.
const ISSUER: &str = "chronolock";

/// The person's codes with what they have, and the buttons to add or replace secrets.
pub(super) fn codes_table(admin: &Admin, person: &Person, codes: &[KeypadCode]) -> Markup {
    let base = format!("/people/{}/keypad", person.id);
    html! {
        @if codes.is_empty() { p { "No keypad codes." } } @else {
            table #keypad-codes {
                thead { tr { th { "User code" } th { "TOTP" } th { "HOTP backup codes" } th {} } }
                tbody {
                    @for k in codes {
                        tr {
                            td { code { (k.code) } }
                            td {
                                @if k.totp {
                                    "TOTP enrolled "
                                    (button_form(admin, &base, "Re-enrol (the old app entry stops working)", &[("code", &k.code), ("kind", "totp"), ("replace", "1")]))
                                } @else {
                                    "none "
                                    (button_form(admin, &base, "Enrol TOTP", &[("code", &k.code), ("kind", "totp")]))
                                }
                            }
                            td {
                                @if k.hotp {
                                    "HOTP backup codes: issued "
                                    (button_form(admin, &base, "New sheet (the old one stops working)", &[("code", &k.code), ("kind", "hotp"), ("replace", "1")]))
                                } @else {
                                    "none "
                                    (button_form(admin, &base, "Issue backup codes", &[("code", &k.code), ("kind", "hotp")]))
                                }
                            }
                            td { (button_form(admin, &format!("{base}/{}/delete", k.id), "Remove", &[])) }
                        }
                    }
                }
            }
        }
    }
}

/// A fresh 160-bit secret from the operating system's RNG.
fn fresh_secret() -> [u8; 20] {
    let mut secret = [0u8; 20];
    rand::rngs::OsRng.fill_bytes(&mut secret);
    secret
}

/// Percent-encodes a URI path segment: RFC 3986 unreserved characters and the sub-delims `(`
/// and `)` stay, every other byte of the UTF-8 becomes `%XX`.
fn encode_label(text: &str) -> String {
    let mut out = String::with_capacity(text.len() * 3);
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~()".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The Key URI authenticator apps read: `otpauth://totp/<issuer>:<label>?secret=…`.
pub fn otpauth_uri(person_name: &str, code: &str, secret_base32: &str) -> String {
    format!(
        "otpauth://totp/{ISSUER}:{}?secret={secret_base32}&issuer={ISSUER}&algorithm=SHA1&digits={DIGITS}&period={PERIOD_S}",
        encode_label(&format!("{person_name} ({code})"))
    )
}

/// The QR code of `text` as an inline SVG element.
pub fn qr_svg(text: &str) -> Result<String, UiError> {
    let code = qrcode::QrCode::new(text.as_bytes())
        .map_err(|e| crate::AppError::Internal(format!("QR code: {e}")))?;
    let svg = code
        .render::<qrcode::render::svg::Color<'_>>()
        .min_dimensions(240, 240)
        .build();
    // Inline in HTML: drop the XML declaration before the <svg> element.
    Ok(svg
        .find("<svg")
        .map_or(svg.clone(), |start| svg[start..].to_string()))
}

/// Gives `person` a fresh secret of `kind` under user `code` and recompiles the site's doors:
/// a new code gets a row; one of the person's codes that lacks the secret gets it; one that has
/// it gets a new one only if `replace` (the old authenticator entry or sheet stops working).
/// Returns the secret (base32) and the HOTP counter the backup codes start at. Refused with a
/// `code` field error: a malformed code, another person's, or a secret that would be replaced
/// without `replace`.
pub(crate) async fn enrol_secret(
    state: &AppState,
    site_id: i64,
    person: &Person,
    code: &str,
    kind: SecretKind,
    replace: bool,
) -> Result<(String, i64), ModelError> {
    let refuse = |message: String| model::invalid("code", message);
    if !valid_code(code) {
        return Err(refuse("1 to 8 digits".into()));
    }
    let secret = data_encoding::BASE32_NOPAD.encode(&fresh_secret());
    let what = match kind {
        SecretKind::Totp => "a TOTP secret",
        SecretKind::Hotp => "backup codes",
    };
    // The HOTP counter the sheet starts at: 0 for a new code.
    let mut base = 0;
    match directory::keypad_code_by_code(state, code).await? {
        Some(k) if k.person_id != person.id => {
            return Err(refuse("this user code is taken".into()));
        }
        Some(k) => {
            let has = match kind {
                SecretKind::Totp => k.totp,
                SecretKind::Hotp => k.hotp,
            };
            if has && !replace {
                return Err(refuse(format!(
                    "code {code} already has {what}; use the button in its row to replace them"
                )));
            }
            base = directory::set_keypad_secret(
                state,
                person.id,
                k.id,
                kind,
                &secret,
                BACKUP_CODES as i64,
            )
            .await?;
        }
        None => {
            let spec = KeypadSpec {
                code: code.to_string(),
                totp_secret: (kind == SecretKind::Totp).then(|| secret.clone()),
                hotp_secret: (kind == SecretKind::Hotp).then(|| secret.clone()),
                hotp_counter: 0,
                digits: i32::from(DIGITS),
                period_s: PERIOD_S as i32,
            };
            model::add_keypad_user(state, person.id, &spec).await?;
        }
    }
    model::site_changed(state, site_id).await?;
    Ok((secret, base))
}

fn valid_code(code: &str) -> bool {
    (1..=8).contains(&code.len()) && code.bytes().all(|b| b.is_ascii_digit())
}

/// The person page again, with `message` beside the code field: 422.
async fn refuse_code(
    state: &AppState,
    admin: &Admin,
    site: &Site,
    person: &Person,
    f: &Fields,
    message: String,
) -> UiResult {
    refuse(state, admin, site, person, f, ("code", message)).await
}

async fn enrol(
    State(state): State<AppState>,
    admin: Admin,
    headers: HeaderMap,
    Path(id): Path<String>,
    Form(fields): Form<Vec<(String, String)>>,
) -> UiResult {
    let f = Fields(fields);
    guard(&admin, &headers, &f)?;
    let site = the_site(&state, &admin).await?;
    let person = directory::person(&state, site.id, parse_id(&id)?).await?;
    let kind = match f.get("kind") {
        "totp" => SecretKind::Totp,
        "hotp" => SecretKind::Hotp,
        other => {
            return Err(UiError::App(crate::AppError::BadRequest(format!(
                "kind must be totp or hotp, not `{other}`"
            ))))
        }
    };
    let code = f.get("code").trim();
    let (secret, base) = match enrol_secret(
        &state,
        site.id,
        &person,
        code,
        kind,
        f.get("replace") == "1",
    )
    .await
    {
        Ok(enrolled) => enrolled,
        Err(ModelError::Invalid { message, .. }) => {
            return refuse_code(&state, &admin, &site, &person, &f, message).await
        }
        Err(other) => return Err(other.into()),
    };
    let back = format!("/people/{}", person.id);
    let page = match kind {
        SecretKind::Totp => totp_page(&admin, &person, code, &secret, &back)?,
        SecretKind::Hotp => hotp_page(&admin, &person, code, &secret, base, &back)?,
    };
    Ok(show_once(page))
}

fn totp_page(
    admin: &Admin,
    person: &Person,
    code: &str,
    secret: &str,
    back: &str,
) -> Result<Markup, UiError> {
    let uri = otpauth_uri(&person.name, code, secret);
    let svg = qr_svg(&uri)?;
    Ok(editor_page(
        &format!("TOTP for {}, code {code}", person.name),
        admin,
        html! {
            div.once {
                p { strong { "Shown only now." } " Scan the QR code with an authenticator app \
                    (any app for TOTP, RFC 6238), or type the secret into it." }
                div #totp-qr role="img" aria-label="QR code of the TOTP secret" { (PreEscaped(svg)) }
                p { "Secret: " code #totp-secret .secret { (secret) } }
                p.hint { "SHA-1, " (DIGITS) " digits, every " (PERIOD_S) " seconds. "
                    a #totp-uri href=(uri) { "Open in an authenticator app on this device" } }
            }
            p { "At the door, type " code { (code) "*" } ", the " (DIGITS) "-digit code from the app, then " code { "#" } "." }
            p { a href=(back) { "Done: back to " (person.name) } }
        },
    ))
}

/// The backup codes of a HOTP secret: counters `base` to `base` + [`BACKUP_CODES`] − 1,
/// zero-padded.
pub fn backup_codes(secret_base32: &str, base: i64) -> Result<Vec<String>, UiError> {
    let secret = chronolock_allowlist::decode_secret(secret_base32, "hotp")
        .map_err(crate::AppError::Internal)?;
    let base = u64::try_from(base).unwrap_or(0);
    (base..base.saturating_add(BACKUP_CODES))
        .map(|counter| {
            otp::hotp(&secret, counter, DIGITS)
                .map(|v| format!("{v:0width$}", width = usize::from(DIGITS)))
                .map_err(|e| UiError::App(crate::AppError::Internal(e.as_str().into())))
        })
        .collect()
}

fn hotp_page(
    admin: &Admin,
    person: &Person,
    code: &str,
    secret: &str,
    base: i64,
    back: &str,
) -> Result<Markup, UiError> {
    let codes = backup_codes(secret, base)?;
    Ok(editor_page(
        &format!("Backup codes for {}", person.name),
        admin,
        html! {
            p.noprint.once { strong { "Shown only now." } " Print them or write them down, then hand them to " (person.name) "." }
            p { "chronolock door backup codes for " strong { (person.name) } ", user code " strong { (code) } "." }
            ol #hotp-codes {
                @for c in &codes { li { code.hotp-code.secret { (c) } } }
            }
            p { "At the door, type " code { (code) "*" } ", one backup code, then " code { "#" } ". \
                 Each code works once. Use them in order: using one also cancels those above it. \
                 They work even while the door's clock is not set." }
            p.noprint {
                button type="button" id="print" { "Print" }
                script src="/static/print.js" {}
                " "
                a href=(back) { "Done: back to " (person.name) }
            }
        },
    ))
}

async fn remove(
    State(state): State<AppState>,
    admin: Admin,
    headers: HeaderMap,
    Path((id, code)): Path<(String, String)>,
    Form(fields): Form<Vec<(String, String)>>,
) -> UiResult {
    let f = Fields(fields);
    guard(&admin, &headers, &f)?;
    let site = the_site(&state, &admin).await?;
    let person = directory::person(&state, site.id, parse_id(&id)?).await?;
    let code = parse_id(&code)?;
    let user_code = directory::keypad_codes(&state, person.id)
        .await?
        .into_iter()
        .find(|k| k.id == code)
        .ok_or(UiError::NotFound)?
        .code;
    if let Some(page) = confirm_first(
        &admin,
        &f,
        &format!("Delete keypad code {user_code}?"),
        html! { "The doors refuse " (person.name) "'s keypad code " (user_code) " at their next sync." },
        &format!("/people/{}/keypad/{code}/delete", person.id),
        &format!("/people/{}", person.id),
    ) {
        return Ok(page);
    }
    directory::delete_keypad_code(&state, person.id, code).await?;
    model::site_changed(&state, site.id).await?;
    Ok(see(&format!("/people/{}", person.id)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_percent_encoded() {
        assert_eq!(
            otpauth_uri("Alice Smith", "1234", "ABC"),
            "otpauth://totp/chronolock:Alice%20Smith%20(1234)?secret=ABC&issuer=chronolock&algorithm=SHA1&digits=6&period=30"
        );
        assert_eq!(
            encode_label("Zoë & Jo/2?#"),
            "Zo%C3%AB%20%26%20Jo%2F2%3F%23"
        );
    }

    #[test]
    fn backup_codes_follow_rfc_4226() {
        // RFC 4226 appendix D: the secret "12345678901234567890", counters 0 to 9.
        let secret = data_encoding::BASE32_NOPAD.encode(b"12345678901234567890");
        let codes = backup_codes(&secret, 0).unwrap_or_default();
        assert_eq!(
            codes,
            [
                "755224", "287082", "359152", "969429", "338314", "254676", "287922", "162583",
                "399871", "520489"
            ]
        );
        let later = backup_codes(&secret, 5).unwrap_or_default();
        assert_eq!(later.first().map(String::as_str), Some("254676"));
        assert_eq!(later.len(), 10);
    }

    #[test]
    fn the_qr_code_is_an_inline_svg() {
        let svg = qr_svg(&otpauth_uri("A", "1", "ABC")).unwrap_or_default();
        assert!(svg.starts_with("<svg"), "{svg:.40}");
    }
}
