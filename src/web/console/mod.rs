//! The RevOps console (`/console`): the program's funnel drawn, the review queue, each referral's
//! story, partners and their portal links, CRM deliveries and parked events, and the service's
//! health — for people, where the admin API serves scripts. It reads with the store's existing
//! queries and decides and replays through the same functions as the API (same rules, same
//! audit). Sessions and the rules every route enforces are in [`session`].

pub mod deliveries;
pub mod health;
pub mod partners;
pub mod program;
pub mod referrals;
pub mod review;
pub mod session;

use actix_web::web;

pub use session::{AdminForm, ConsoleForm, ConsoleUser};

/// Every console route.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/console", web::get().to(session::get_console))
        .route("/console/sign-in", web::post().to(session::post_sign_in))
        .route("/console/sign-out", web::post().to(session::post_sign_out))
        .route("/console/program", web::get().to(program::get_program))
        .route(
            "/console/program.csv",
            web::get().to(program::get_program_csv),
        )
        .route(
            "/console/comparison.csv",
            web::get().to(program::get_comparison_csv),
        )
        .route(
            "/console/referrers.csv",
            web::get().to(program::get_referrers_csv),
        )
        .route("/console/review", web::get().to(review::get_review))
        .route(
            "/console/rewards/{id}/approve",
            web::post().to(review::post_approve),
        )
        .route(
            "/console/rewards/{id}/reject",
            web::post().to(review::post_reject),
        )
        .route(
            "/console/referrals",
            web::get().to(referrals::get_referrals),
        )
        .route(
            "/console/referrals/{id}",
            web::get().to(referrals::get_referral),
        )
        .route("/console/partners", web::get().to(partners::get_partners))
        .route(
            "/console/deliveries",
            web::get().to(deliveries::get_deliveries),
        )
        .route(
            "/console/deliveries/replay",
            web::post().to(deliveries::post_replay),
        )
        .route(
            "/console/inbox/requeue",
            web::post().to(deliveries::post_requeue_inbox),
        )
        .route("/console/health", web::get().to(health::get_health));
}

/// The console's pages, in the order of its navigation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Section {
    Program,
    Review,
    Referrals,
    Partners,
    Deliveries,
    Health,
}

impl Section {
    const ALL: [Section; 6] = [
        Self::Program,
        Self::Review,
        Self::Referrals,
        Self::Partners,
        Self::Deliveries,
        Self::Health,
    ];

    fn href(self) -> &'static str {
        match self {
            Self::Program => "/console/program",
            Self::Review => "/console/review",
            Self::Referrals => "/console/referrals",
            Self::Partners => "/console/partners",
            Self::Deliveries => "/console/deliveries",
            Self::Health => "/console/health",
        }
    }

    fn label(self) -> &'static str {
        match self {
            Self::Program => "Program",
            Self::Review => "Review queue",
            Self::Referrals => "Referrals",
            Self::Partners => "Partners",
            Self::Deliveries => "Deliveries",
            Self::Health => "Health",
        }
    }
}

pub struct NavItem {
    pub href: &'static str,
    pub label: &'static str,
    pub current: bool,
}

/// What every console page shows around its content: the navigation, who is signed in, the
/// sign-out form (with the session's CSRF token).
pub struct Chrome {
    pub section: Section,
    pub actor: String,
    pub role: &'static str,
    /// Admin sessions see the buttons that change something; read sessions see none.
    pub admin: bool,
    pub csrf: String,
}

impl Chrome {
    pub fn new(section: Section, user: &ConsoleUser) -> Self {
        Self {
            section,
            actor: user.actor.clone(),
            role: user.role(),
            admin: user.admin,
            csrf: user.csrf.clone(),
        }
    }

    pub fn nav(&self) -> Vec<NavItem> {
        Section::ALL
            .into_iter()
            .map(|s| NavItem {
                href: s.href(),
                label: s.label(),
                current: s == self.section,
            })
            .collect()
    }
}
