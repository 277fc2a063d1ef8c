//! `/firmware`: upload signed firmware images (`chronolock firmware sign`'s output), see them,
//! delete one no door is assigned to, and assign one to several doors at once. Doors learn of
//! their update at their next sync ([`crate::firmware`]).
//!
//! The upload is the one form sent as `multipart/form-data` (a file); it carries the session's
//! CSRF token like every other form, and its route alone accepts a body of up to
//! [`UPLOAD_LIMIT`].

use axum::extract::multipart::{Multipart, MultipartError, MultipartRejection};
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::{Form, Router};
use maud::{html, Markup};

use super::{
    confirm_first, editor_page, form_error, guard, local_time, parse_id, see, the_site,
    unprocessable, FieldError, Fields, UiError, UiResult,
};
use crate::auth::Admin;
use crate::directory::{self, Site};
use crate::firmware::{self, MAX_FILE};
use crate::pages::field_error;
use crate::AppState;

/// The largest upload request: the largest file and room for the rest of the form.
pub const UPLOAD_LIMIT: usize = MAX_FILE + 64 * 1024;

pub(super) fn routes() -> Router<AppState> {
    Router::new()
        .route(
            "/firmware",
            get(show)
                .post(upload)
                .layer(DefaultBodyLimit::max(UPLOAD_LIMIT)),
        )
        .route("/firmware/assign", post(assign))
        .route("/firmware/{id}/delete", post(delete))
}

/// `1234567` as `1,234,567`.
fn grouped(n: i64) -> String {
    let digits = n.unsigned_abs().to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    if n < 0 {
        out.insert(0, '-');
    }
    out
}

async fn firmware_page(
    state: &AppState,
    admin: &Admin,
    site: &Site,
    f: &Fields,
    err: FieldError<'_>,
) -> Result<Markup, UiError> {
    let images = firmware::images(state).await?;
    let doors = directory::doors(state, site.id).await?;
    let by_door = firmware::doors_firmware(state, None).await?;
    let chosen = f.all("door");
    let zone = site.zone();
    Ok(editor_page(
        "Firmware",
        admin,
        html! {
            p.hint { "Doors update their firmware over the air from a signed image, the file "
                     code { "chronolock firmware sign" } " makes. This server cannot sign images \
                     or check their signatures: each door checks an image with the firmware key \
                     built into it, and installs only a newer version built for its flash size." }
            section {
                h3 { "Images" }
                (field_error(err, "images"))
                @if images.is_empty() {
                    p #no-images { "No images uploaded yet." }
                } @else {
                    table #images {
                        thead { tr {
                            th { "Version" } th { "Flash" } th { "Size" } th { "Key id" }
                            th { "SHA-256" } th { "Uploaded (" (site.timezone) ")" } th { "Doors" } th {}
                        } }
                        tbody {
                            @for image in &images {
                                tr id={ "image-" (image.id) } {
                                    td.version { (image.version) }
                                    td { (image.flash_mb) " MB" }
                                    td { (grouped(image.size)) " bytes" }
                                    td { code { (image.key_id) } }
                                    td { code title=(image.sha256) { (image.sha256.get(..16).unwrap_or(&image.sha256)) "…" } }
                                    td {
                                        (local_time(&zone, image.uploaded_at))
                                        @if let Some(by) = &image.uploaded_by { span.muted { " by " (by) } }
                                    }
                                    td { (image.doors) }
                                    td {
                                        @if image.doors == 0 {
                                            (super::button_form(admin, &format!("/firmware/{}/delete", image.id), "Delete", &[]))
                                        } @else {
                                            span.muted title="assigned to doors: give them another image, or none, to delete it" { "in use" }
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            }
            section {
                h3 { "Upload an image" }
                form method="post" action="/firmware" enctype="multipart/form-data" {
                    (super::csrf(admin))
                    label for="image" { "Signed image file" }
                    input type="file" id="image" name="image" required accept=".bin,application/octet-stream";
                    (field_error(err, "image"))
                    p.hint { "The file as " code { "chronolock firmware sign" } " wrote it, up to "
                              (MAX_FILE / (1024 * 1024)) " MiB. A version is kept once per flash size." }
                    button type="submit" id="upload" { "Upload" }
                }
            }
            section {
                h3 { "Doors" }
                @if doors.is_empty() {
                    p { "No doors yet. " a href="/doors" { "Add a door" } "." }
                } @else {
                    form #assign-form method="post" action="/firmware/assign" {
                        (super::csrf(admin))
                        table #firmware-doors {
                            thead { tr { th { "Choose" } th { "Door" } th { "Runs" } th { "Update" } } }
                            tbody {
                                @for door in &doors {
                                    @let fw = by_door.get(&door.id).cloned().unwrap_or_default();
                                    @let value = door.id.to_string();
                                    tr id={ "firmware-door-" (door.id) } {
                                        td { input type="checkbox" id={ "door-" (door.id) } name="door" value=(value)
                                                checked[chosen.contains(&value.as_str())]; }
                                        td { label for={ "door-" (door.id) } { (door.name) } }
                                        td.running { (fw.running_text()) }
                                        td.update {
                                            @match (&fw.assigned, fw.state_text()) {
                                                (Some(a), Some(text)) => { (a.version) " (" (a.flash_mb) " MB) · " (text) }
                                                _ => span.muted { "none" },
                                            }
                                        }
                                    }
                                }
                            }
                        }
                        (field_error(err, "door"))
                        label for="firmware" { "Update the chosen doors to" }
                        select id="firmware" name="firmware" {
                            @for image in &images {
                                option value=(image.id) selected[f.get("firmware") == image.id.to_string()] {
                                    (image.version) " for " (image.flash_mb) " MB flash"
                                }
                            }
                            option value="none" selected[f.get("firmware") == "none"] { "No update" }
                        }
                        (field_error(err, "firmware"))
                        p.hint { "Choose the image built for the doors' flash size: a door refuses \
                                  one for another size. A door is offered its update at each sync \
                                  while it runs an older version, in pieces of up to 128 KiB." }
                        button type="submit" id="assign" { "Assign" }
                    }
                }
            }
        },
    ))
}

async fn show(State(state): State<AppState>, admin: Admin) -> UiResult {
    let site = the_site(&state, &admin).await?;
    Ok(
        firmware_page(&state, &admin, &site, &Fields::default(), None)
            .await?
            .into_response(),
    )
}

/// What an upload request held: the CSRF token and the file (or why it could not be read).
#[derive(Default)]
struct Upload {
    csrf: String,
    file: Option<Vec<u8>>,
    error: Option<String>,
}

/// Reads the upload form's fields; a file larger than [`MAX_FILE`] is not read to its end.
async fn read_upload(mut multipart: Multipart) -> Upload {
    let mut upload = Upload::default();
    let too_large = || format!("the file is larger than {} MiB", MAX_FILE / (1024 * 1024));
    let failed = |e: MultipartError| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            too_large()
        } else {
            format!("the upload did not arrive whole: {}", e.body_text())
        }
    };
    loop {
        let mut field = match multipart.next_field().await {
            Ok(Some(field)) => field,
            Ok(None) => break,
            Err(e) => {
                upload.error = Some(failed(e));
                break;
            }
        };
        match field.name() {
            Some("csrf") => match field.text().await {
                Ok(text) => upload.csrf = text,
                Err(e) => {
                    upload.error = Some(failed(e));
                    break;
                }
            },
            Some("image") => {
                let mut bytes = Vec::new();
                loop {
                    match field.chunk().await {
                        Ok(Some(chunk)) if bytes.len() + chunk.len() > MAX_FILE => {
                            upload.error = Some(too_large());
                            return upload;
                        }
                        Ok(Some(chunk)) => bytes.extend_from_slice(&chunk),
                        Ok(None) => break,
                        Err(e) => {
                            upload.error = Some(failed(e));
                            return upload;
                        }
                    }
                }
                upload.file = Some(bytes);
            }
            // Nothing else is read; other fields are skipped.
            _ => {}
        }
    }
    upload
}

async fn upload(
    State(state): State<AppState>,
    admin: Admin,
    headers: HeaderMap,
    multipart: Result<Multipart, MultipartRejection>,
) -> UiResult {
    crate::auth::check_origin(&headers)?;
    let multipart = multipart.map_err(|e| {
        crate::error::AppError::BadRequest(format!("the upload form: {}", e.body_text()))
    })?;
    let upload = read_upload(multipart).await;
    let site = the_site(&state, &admin).await?;
    // A body that broke off may have lost its token: the page again, with nothing kept.
    if let Some(error) = &upload.error {
        tracing::info!(by = %admin.username, %error, "firmware upload refused");
        let status = if error.starts_with("the file is larger") {
            StatusCode::PAYLOAD_TOO_LARGE
        } else {
            StatusCode::UNPROCESSABLE_ENTITY
        };
        let markup = firmware_page(
            &state,
            &admin,
            &site,
            &Fields::default(),
            Some(("image", error)),
        )
        .await?;
        return Ok((status, markup).into_response());
    }
    let f = Fields(vec![("csrf".into(), upload.csrf)]);
    guard(&admin, &headers, &f)?;
    let bytes = upload.file.unwrap_or_default();
    match firmware::store_image(&state, &bytes, &admin.username, crate::now_unix()).await {
        Ok(id) => {
            let header = chronolock_core::firmware::Header::peek(&bytes).ok();
            tracing::info!(
                by = %admin.username,
                image = id,
                version = %header.map_or_else(String::new, |h| h.version.to_string()),
                flash_mb = header.map_or(0, |h| h.flash_mb),
                bytes = bytes.len(),
                "firmware image uploaded"
            );
            Ok(see("/firmware"))
        }
        Err(e) => {
            let (field, message) = form_error(e, &["image"])?;
            tracing::info!(by = %admin.username, error = %message, "firmware upload refused");
            Ok(unprocessable(
                firmware_page(
                    &state,
                    &admin,
                    &site,
                    &Fields::default(),
                    Some((field, &message)),
                )
                .await?,
            ))
        }
    }
}

async fn assign(
    State(state): State<AppState>,
    admin: Admin,
    headers: HeaderMap,
    Form(fields): Form<Vec<(String, String)>>,
) -> UiResult {
    let f = Fields(fields);
    guard(&admin, &headers, &f)?;
    let site = the_site(&state, &admin).await?;
    let doors = f
        .all("door")
        .into_iter()
        .map(parse_id)
        .collect::<Result<Vec<i64>, UiError>>()?;
    let image = match f.get("firmware") {
        "none" => None,
        "" => {
            return Ok(unprocessable(
                firmware_page(
                    &state,
                    &admin,
                    &site,
                    &f,
                    Some(("firmware", "upload an image first, or choose “No update”")),
                )
                .await?,
            ))
        }
        id => Some(parse_id(id)?),
    };
    if doors.is_empty() {
        return Ok(unprocessable(
            firmware_page(
                &state,
                &admin,
                &site,
                &f,
                Some(("door", "choose at least one door")),
            )
            .await?,
        ));
    }
    firmware::assign(&state, site.id, &doors, image).await?;
    tracing::info!(by = %admin.username, ?doors, image, "firmware assigned");
    Ok(see("/firmware"))
}

async fn delete(
    State(state): State<AppState>,
    admin: Admin,
    headers: HeaderMap,
    Path(id): Path<String>,
    Form(fields): Form<Vec<(String, String)>>,
) -> UiResult {
    let f = Fields(fields);
    guard(&admin, &headers, &f)?;
    let site = the_site(&state, &admin).await?;
    let id = parse_id(&id)?;
    let image = firmware::images(&state)
        .await?
        .into_iter()
        .find(|i| i.id == id)
        .ok_or(UiError::NotFound)?;
    if let Some(page) = confirm_first(
        &admin,
        &f,
        &format!("Delete firmware {}?", image.version),
        html! { "The image is removed from the server; doors keep what they run." },
        &format!("/firmware/{id}/delete"),
        "/firmware",
    ) {
        return Ok(page);
    }
    match firmware::delete_image(&state, id).await {
        Ok(version) => {
            tracing::info!(by = %admin.username, image = id, %version, "firmware image deleted");
            Ok(see("/firmware"))
        }
        Err(e) => {
            let (field, message) = form_error(e, &["images"])?;
            Ok(unprocessable(
                firmware_page(
                    &state,
                    &admin,
                    &site,
                    &Fields::default(),
                    Some((field, &message)),
                )
                .await?,
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::grouped;

    #[test]
    fn sizes_read_in_groups_of_three() {
        assert_eq!(grouped(0), "0");
        assert_eq!(grouped(999), "999");
        assert_eq!(grouped(1000), "1,000");
        assert_eq!(grouped(1_572_992), "1,572,992");
        assert_eq!(grouped(-12_345), "-12,345");
    }
}
