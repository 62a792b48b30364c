//! Partners (`/console/partners`): referrers by code with their referrals and wins, and — for
//! admin sessions — a fresh portal link for each (`portal.link_days` long), the same link
//! `referral-sync partners link CODE` prints.

use actix_web::{web, HttpRequest, HttpResponse};
use askama::Template;
use serde::Deserialize;

use super::{Chrome, ConsoleUser, Section};
use crate::startup::AppState;
use crate::web::portal::link;
use crate::web::{format_stored_count, render, WebError};

const PAGE: i64 = 50;

#[derive(Debug, Default, Deserialize)]
pub struct PartnersQuery {
    pub after: Option<String>,
}

pub struct PartnerRow {
    pub code: String,
    /// The partner's referrals in the console.
    pub referrals_href: String,
    pub name: String,
    pub market: String,
    pub status: String,
    pub referrals: String,
    pub won: String,
    pub link: Option<String>,
}

#[derive(Template)]
#[template(path = "console/templates/partners.html")]
struct PartnersPage {
    chrome: Chrome,
    rows: Vec<PartnerRow>,
    next: Option<String>,
    /// Why admins see no links, when they see none.
    links_off: Option<String>,
    link_days: u32,
}

/// `GET /console/partners?after=`.
pub async fn get_partners(
    req: HttpRequest,
    user: ConsoleUser,
    query: web::Query<PartnersQuery>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, WebError> {
    let after = query.after.as_deref().filter(|a| !a.is_empty());
    let referrers = state.store.list_referrers(after, PAGE).await?;
    let counts = match (referrers.first(), referrers.last()) {
        (Some(first), Some(last)) => {
            state
                .store
                .referral_counts_between(&first.facts.code, &last.facts.code)
                .await?
        }
        _ => Vec::new(),
    };
    // Links are made for the origin this console is served on when none is configured.
    let origin = {
        let info = req.connection_info();
        format!("{}://{}", info.scheme(), info.host())
    };
    let now = state.clock.now();
    let days = i64::from(state.settings.portal.link_days);
    let mut links_off = None;
    let rows = referrers
        .iter()
        .map(|r| {
            let (referrals, won) = counts
                .iter()
                .find(|(code, _, _)| *code == r.facts.code)
                .map_or((0, 0), |(_, n, w)| (*n, *w));
            let link = if user.admin {
                match link::link(&state.settings, &r.facts.code, days, now, Some(&origin)) {
                    Ok(url) => Some(url),
                    Err(e) => {
                        links_off = Some(e.to_string());
                        None
                    }
                }
            } else {
                None
            };
            Ok(PartnerRow {
                code: r.facts.code.clone(),
                referrals_href: format!(
                    "/console/referrals?{}",
                    url::form_urlencoded::Serializer::new(String::new())
                        .append_pair("referrer", &r.facts.code)
                        .finish()
                ),
                name: r.facts.name.clone().unwrap_or_default(),
                market: r.facts.market.clone().unwrap_or_else(|| "–".into()),
                status: r.status.clone(),
                referrals: format_stored_count(referrals)?,
                won: format_stored_count(won)?,
                link,
            })
        })
        .collect::<Result<Vec<_>, WebError>>()?;
    let next = (referrers.len() as i64 == PAGE)
        .then(|| referrers.last())
        .flatten()
        .map(|last| {
            format!(
                "/console/partners?{}",
                url::form_urlencoded::Serializer::new(String::new())
                    .append_pair("after", &last.facts.code)
                    .finish()
            )
        });
    render(&PartnersPage {
        chrome: Chrome::new(Section::Partners, &user),
        rows,
        next,
        links_off,
        link_days: state.settings.portal.link_days,
    })
}
