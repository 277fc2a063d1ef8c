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
code { background: #f3f3f3; padding: 0 .25rem; }
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
    ("/holidays", "Holidays"),
    ("/firmware", "Firmware"),
    ("/webhooks", "Webhooks"),
    ("/site", "Site"),
    ("/admins", "Admins"),
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
