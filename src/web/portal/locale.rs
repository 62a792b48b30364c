//! The portal's two languages: English and Russian texts, and money and dates written the way
//! each locale writes them (`$1,234.50` and `Nov 20, 2026`; `1 234,50 $` and `20 ноября 2026 г.`).
//! Amounts are exact decimals, printed digit for digit, never through floating point.

use rust_decimal::Decimal;

use crate::clock::Millis;
use crate::web::group_digits;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lang {
    En,
    Ru,
}

/// Every text of the partner page in one language. `{…}` marks are filled in by the page.
pub struct Texts {
    pub html_lang: &'static str,
    pub title: &'static str,
    pub other_language: &'static str,
    pub tier: &'static str,
    pub successful: &'static str,
    /// `{n}`, `{tier}`, `{multiplier}`.
    pub next_tier: &'static str,
    /// `{tier}`.
    pub first_tier: &'static str,
    pub top_tier: &'static str,
    pub rewards: &'static str,
    pub currency: &'static str,
    pub pending: &'static str,
    pub in_review: &'static str,
    pub to_be_paid: &'static str,
    pub paid: &'static str,
    pub no_rewards: &'static str,
    pub referrals: &'static str,
    pub referee: &'static str,
    pub referred_on: &'static str,
    pub status: &'static str,
    pub reward: &'static str,
    pub no_referrals: &'static str,
    /// `{percent}`, `{amount}`.
    pub percent_of: &'static str,
    pub not_computed: &'static str,
    /// `{date}`.
    pub expires: &'static str,
    pub more_referrals: &'static str,
    pub payouts: &'static str,
    pub period: &'static str,
    pub total: &'static str,
    pub due_date: &'static str,
    pub payment: &'static str,
    /// A statement still being gathered: its total is what is owed so far.
    pub statement_open: &'static str,
    pub statement_paid: &'static str,
    /// `{reference}`, `{date}`.
    pub paid_with: &'static str,
    pub no_payouts: &'static str,
    /// `{n}`.
    pub more_payouts: &'static str,
}

const EN: Texts = Texts {
    html_lang: "en",
    title: "Your referrals",
    other_language: "Русский",
    tier: "Tier",
    successful: "Successful referrals",
    next_tier: "{n} more successful referral(s) to reach {tier} (×{multiplier} rewards).",
    first_tier: "Your first successful referral makes you {tier}.",
    top_tier: "You are at the top tier.",
    rewards: "Rewards",
    currency: "Currency",
    pending: "Pending (hold period)",
    in_review: "In review",
    to_be_paid: "Eligible, to be paid",
    paid: "Paid",
    no_rewards: "No rewards yet: a reward is earned when a referred deal is won.",
    referrals: "Referrals",
    referee: "Referred",
    referred_on: "Referred on",
    status: "Status",
    reward: "Reward",
    no_referrals: "No referrals yet.",
    percent_of: "{percent}% of {amount}",
    not_computed: "amount to be confirmed",
    expires: "This page shows only your own referrals. Its link is valid until {date}.",
    more_referrals: "Your 500 most recent referrals are shown.",
    payouts: "Payouts",
    period: "Month",
    total: "Total",
    due_date: "Due by",
    payment: "Payment",
    statement_open: "to be paid",
    statement_paid: "paid out",
    paid_with: "{date}, reference {reference}",
    no_payouts: "No payout statements yet: eligible rewards are gathered into a statement per month and currency.",
    more_payouts: "Your {n} most recent statements are shown.",
};

const RU: Texts = Texts {
    html_lang: "ru",
    title: "Ваши рекомендации",
    other_language: "English",
    tier: "Уровень",
    successful: "Успешных рекомендаций",
    next_tier:
        "До уровня {tier} (вознаграждение ×{multiplier}) осталось успешных рекомендаций: {n}.",
    first_tier: "Первая успешная рекомендация даст уровень {tier}.",
    top_tier: "Это высший уровень.",
    rewards: "Вознаграждения",
    currency: "Валюта",
    pending: "Ожидают (период удержания)",
    in_review: "На проверке",
    to_be_paid: "Подтверждены, к выплате",
    paid: "Выплачено",
    no_rewards: "Вознаграждений пока нет: оно начисляется, когда сделка по рекомендации выиграна.",
    referrals: "Рекомендации",
    referee: "Клиент",
    referred_on: "Дата рекомендации",
    status: "Статус",
    reward: "Вознаграждение",
    no_referrals: "Рекомендаций пока нет.",
    percent_of: "{percent}% от {amount}",
    not_computed: "сумма уточняется",
    // The date ends with «г.», which closes the sentence.
    expires: "На этой странице только ваши рекомендации. Ссылка действует до {date}",
    more_referrals: "Показаны 500 последних рекомендаций.",
    payouts: "Выплаты",
    period: "Месяц",
    total: "Сумма",
    due_date: "Срок выплаты",
    payment: "Платёж",
    statement_open: "к выплате",
    statement_paid: "выплачено",
    paid_with: "{date}, номер платежа {reference}",
    no_payouts: "Ведомостей на выплату пока нет: подтверждённые вознаграждения собираются в ведомость за месяц по каждой валюте.",
    more_payouts: "Показаны последние ведомости: {n}.",
};

const MONTHS_EN: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];
/// Genitive, as a date says them: «20 ноября».
const MONTHS_RU: [&str; 12] = [
    "января",
    "февраля",
    "марта",
    "апреля",
    "мая",
    "июня",
    "июля",
    "августа",
    "сентября",
    "октября",
    "ноября",
    "декабря",
];

const MONTHS_EN_FULL: [&str; 12] = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
];
/// Nominative, as a month on its own reads: «ноябрь 2026».
const MONTHS_RU_NOMINATIVE: [&str; 12] = [
    "январь",
    "февраль",
    "март",
    "апрель",
    "май",
    "июнь",
    "июль",
    "август",
    "сентябрь",
    "октябрь",
    "ноябрь",
    "декабрь",
];

/// The no-break space Russian groups digits with and puts before the currency.
const NBSP: &str = "\u{a0}";

impl Lang {
    /// `?lang=` when it names a language, otherwise Russian for the RU market and English else.
    pub fn choose(requested: Option<&str>, market: Option<&str>) -> Lang {
        match requested.map(str::trim) {
            Some(l) if l.eq_ignore_ascii_case("ru") => Lang::Ru,
            Some(l) if l.eq_ignore_ascii_case("en") => Lang::En,
            _ if market.is_some_and(|m| m.eq_ignore_ascii_case("RU")) => Lang::Ru,
            _ => Lang::En,
        }
    }

    pub fn code(self) -> &'static str {
        match self {
            Lang::En => "en",
            Lang::Ru => "ru",
        }
    }

    pub fn other(self) -> Lang {
        match self {
            Lang::En => Lang::Ru,
            Lang::Ru => Lang::En,
        }
    }

    pub fn texts(self) -> &'static Texts {
        match self {
            Lang::En => &EN,
            Lang::Ru => &RU,
        }
    }

    /// An exact amount with its currency, as the locale writes it.
    pub fn money(self, currency: &str, amount: Decimal) -> String {
        let mut amount = amount;
        if amount.scale() < 2 {
            amount.rescale(2);
        }
        let text = amount.abs().to_string();
        let (whole, fraction) = text.split_once('.').unwrap_or((&text, ""));
        let negative = amount.is_sign_negative() && !amount.is_zero();
        let symbol = match currency {
            "USD" => Some("$"),
            "EUR" => Some("€"),
            "GBP" => Some("£"),
            "RUB" => Some("₽"),
            _ => None,
        };
        match self {
            Lang::En => {
                let number = format!("{}.{fraction}", group_digits(whole, ","));
                let sign = if negative { "-" } else { "" };
                match symbol {
                    Some(s) if currency != "RUB" => format!("{sign}{s}{number}"),
                    _ => format!("{sign}{currency}{NBSP}{number}"),
                }
            }
            Lang::Ru => {
                let number = format!("{},{fraction}", group_digits(whole, NBSP));
                let sign = if negative { "-" } else { "" };
                format!("{sign}{number}{NBSP}{}", symbol.unwrap_or(currency))
            }
        }
    }

    /// A calendar date (UTC).
    pub fn date(self, ms: Millis) -> String {
        use chrono::Datelike;
        let Some(t) = chrono::DateTime::from_timestamp_millis(ms) else {
            return ms.to_string();
        };
        let month = t.month0() as usize;
        match self {
            Lang::En => format!("{} {}, {}", MONTHS_EN[month], t.day(), t.year()),
            Lang::Ru => format!("{} {} {}{NBSP}г.", t.day(), MONTHS_RU[month], t.year()),
        }
    }

    /// A calendar month (UTC) of `ms`: `November 2026`, `ноябрь 2026`.
    pub fn month(self, ms: Millis) -> String {
        use chrono::Datelike;
        let Some(t) = chrono::DateTime::from_timestamp_millis(ms) else {
            return ms.to_string();
        };
        let month = t.month0() as usize;
        match self {
            Lang::En => format!("{} {}", MONTHS_EN_FULL[month], t.year()),
            Lang::Ru => format!("{} {}", MONTHS_RU_NOMINATIVE[month], t.year()),
        }
    }

    /// A decimal such as a percent or multiplier, with the locale's decimal mark.
    pub fn decimal(self, d: Decimal) -> String {
        let text = d.normalize().to_string();
        match self {
            Lang::En => text,
            Lang::Ru => text.replace('.', ","),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> Decimal {
        s.parse().unwrap()
    }

    #[test]
    fn russian_is_the_default_for_the_ru_market_and_lang_switches() {
        assert_eq!(Lang::choose(None, Some("RU")), Lang::Ru);
        assert_eq!(Lang::choose(None, Some("US")), Lang::En);
        assert_eq!(Lang::choose(None, None), Lang::En);
        assert_eq!(Lang::choose(Some("en"), Some("RU")), Lang::En);
        assert_eq!(Lang::choose(Some("RU"), Some("US")), Lang::Ru);
        assert_eq!(Lang::choose(Some("de"), Some("RU")), Lang::Ru);
    }

    #[test]
    fn money_is_written_as_each_locale_writes_it() {
        assert_eq!(Lang::En.money("USD", d("1234.5")), "$1,234.50");
        assert_eq!(Lang::En.money("USD", d("-12.5")), "-$12.50");
        assert_eq!(Lang::En.money("RUB", d("50000")), "RUB\u{a0}50,000.00");
        assert_eq!(Lang::Ru.money("RUB", d("50000")), "50\u{a0}000,00\u{a0}₽");
        assert_eq!(
            Lang::Ru.money("USD", d("1234.567")),
            "1\u{a0}234,567\u{a0}$"
        );
        assert_eq!(Lang::Ru.money("CHF", d("7")), "7,00\u{a0}CHF");
    }

    #[test]
    fn dates_and_decimals_follow_the_locale() {
        let t = 1_795_168_800_000; // 2026-11-20T10:00:00Z
        assert_eq!(Lang::En.date(t), "Nov 20, 2026");
        assert_eq!(Lang::Ru.date(t), "20 ноября 2026\u{a0}г.");
        assert_eq!(Lang::En.month(t), "November 2026");
        assert_eq!(Lang::Ru.month(t), "ноябрь 2026");
        assert_eq!(Lang::Ru.decimal(d("7.50")), "7,5");
        assert_eq!(Lang::En.decimal(d("1.50")), "1.5");
    }
}
