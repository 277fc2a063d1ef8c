//! The admin UI's pages: server-rendered HTML (maud escapes every value), one layout.

use maud::{html, Markup, DOCTYPE};

use crate::auth::Admin;

const STYLE: &str = "
body { font-family: system-ui, sans-serif; max-width: 60rem; margin: 0 auto; padding: 1rem; color: #1d1d1f; }
header { display: flex; gap: 1rem; align-items: center; border-bottom: 1px solid #ddd; margin-bottom: 1rem; }
header h1 { font-size: 1.2rem; }
header nav { display: flex; gap: .8rem; margin-right: auto; flex-wrap: wrap; }
table { border-collapse: collapse; width: 100%; }
th, td { text-align: left; padding: .3rem .5rem; border-bottom: 1px solid #eee; }
.muted { color: #666; }
@media print { header, form, .noprint { display: none; } }
form { display: grid; gap: .4rem; max-width: 26rem; }
header form { display: inline; }
label { font-weight: 600; margin-top: .4rem; }
input, select, button { font: inherit; padding: .35rem .5rem; }
button { cursor: pointer; }
.error { color: #b00020; font-size: .9rem; }
code { background: #f3f3f3; padding: 0 .25rem; overflow-wrap: anywhere; }
*, *::before, *::after { box-sizing: border-box; }
input, select, textarea, button, img, svg { max-width: 100%; }
pre { white-space: pre-wrap; overflow-wrap: anywhere; }
@media (max-width: 40rem) {
  body { padding: .5rem; }
  header { flex-wrap: wrap; gap: .3rem .8rem; }
  header nav { order: 3; width: 100%; gap: .2rem .8rem; }
  main table, main thead, main tbody, main tr, main th, main td { display: block; width: auto; }
  main thead { display: none; }
  main tr { border-bottom: 1px solid #ddd; padding: .3rem 0; }
  main td { border: none; padding: .1rem .2rem; overflow-wrap: anywhere; }
  main td:empty { display: none; }
  main td[data-label]::before { content: attr(data-label) \": \"; color: #666; }
}
";

/// The admin's menu: every top-level page.
pub const NAV: &[(&str, &str)] = &[
    ("/", "Dashboard"),
    ("/lockdown", "Lockdown"),
    ("/log", "Access log"),
    ("/doors", "Doors"),
    ("/people", "People"),
    ("/groups", "Groups"),
    ("/schedules", "Schedules"),
    ("/rules", "Rules"),
    ("/holidays", "Holidays"),
    ("/firmware", "Firmware"),
    ("/webhooks", "Webhooks"),
    ("/site", "Site"),
    ("/admins", "Admins"),
    ("/tokens", "API tokens"),
];

/// The page layout: title, a header with the admin's name and a logout button, the body.
pub fn page(title: &str, admin: Option<&Admin>, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · chronolock" }
                style { (maud::PreEscaped(STYLE)) }
            }
            body {
                header {
                    h1 { "chronolock" }
                    @if let Some(admin) = admin {
                        nav {
                            @for (href, label) in NAV {
                                a href=(href) { (label) }
                            }
                        }
                        span { (admin.username) }
                        form method="post" action="/logout" {
                            input type="hidden" name="csrf" value=(admin.csrf);
                            button type="submit" { "Log out" }
                        }
                    }
                }
                main {
                    h2 { (title) }
                    (body)
                }
            }
        }
    }
}

/// The message for `field`, if the error is about it.
pub fn field_error(error: Option<(&str, &str)>, field: &str) -> Markup {
    html! {
        @if let Some((f, message)) = error {
            @if f == field { p class="error" id={ (field) "-error" } { (message) } }
        }
    }
}

/// The page that asks before a delete: what it removes, a button that posts `action` again with
/// the `hidden` fields (among them `confirm=yes`), and a way `back`.
pub fn confirm_page(
    admin: &Admin,
    title: &str,
    what: Markup,
    action: &str,
    back: &str,
    hidden: &[(&str, &str)],
) -> Markup {
    page(
        title,
        Some(admin),
        html! {
            p #confirm-what { (what) }
            form method="post" action=(action) {
                input type="hidden" name="csrf" value=(admin.csrf);
                @for (name, value) in hidden { input type="hidden" name=(name) value=(value); }
                button type="submit" #confirm-delete { "Delete" }
            }
            p { a #keep href=(back) { "Keep it" } }
        },
    )
}
