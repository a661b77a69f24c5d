//! Shipping windows: when batches may leave the spool (sans-IO: the time is passed in).
//!
//! A window is written `[DAYS] HH:MM[:SS]-HH:MM[:SS] ZONE`, for example `01:00-06:00
//! Europe/Paris`, `Mon-Fri 22:00-06:00 America/New_York` or `Sat,Sun 00:00-24:00 UTC`. DAYS
//! (default: every day) names the days on which the window *opens*; a window whose end is before
//! its start runs past midnight into the next day. ZONE is an IANA time-zone name, resolved from
//! the system's time-zone database, so the window follows daylight-saving changes. A schedule is
//! any number of windows; shipping is allowed while any one is open.

use jiff::civil::{Date, Weekday};
use jiff::tz::TimeZone;
use jiff::{Timestamp, Zoned};

/// A window that could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("shipping window {text:?}: {reason}")]
pub struct ScheduleError {
    /// The window as written.
    pub text: String,
    /// What is wrong with it.
    pub reason: String,
}

/// One shipping window.
#[derive(Debug, Clone)]
pub struct Window {
    /// Bit `n` set: the window opens on weekday `n` (Monday = 0).
    days: u8,
    /// Seconds after local midnight.
    start: u32,
    /// Seconds after local midnight, at most 86 400; before `start` for a window past midnight.
    end: u32,
    tz: TimeZone,
    text: String,
}

const DAY_NAMES: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];

fn day_index(day: Weekday) -> u32 {
    day.to_monday_zero_offset() as u32
}

fn parse_day(name: &str) -> Option<u32> {
    let lower = name.to_ascii_lowercase();
    DAY_NAMES.iter().position(|d| *d == lower).map(|i| i as u32)
}

fn parse_days(text: &str) -> Result<u8, String> {
    if text == "*" {
        return Ok(0x7f);
    }
    let mut days = 0u8;
    for part in text.split(',') {
        let bad = || {
            format!("unknown day {part:?} (use Mon..Sun, ranges like Mon-Fri, lists like Sat,Sun)")
        };
        match part.split_once('-') {
            Some((from, to)) => {
                let (from, to) = (
                    parse_day(from).ok_or_else(bad)?,
                    parse_day(to).ok_or_else(bad)?,
                );
                let mut d = from;
                loop {
                    days |= 1 << d;
                    if d == to {
                        break;
                    }
                    d = (d + 1) % 7;
                }
            }
            None => days |= 1 << parse_day(part).ok_or_else(bad)?,
        }
    }
    Ok(days)
}

fn parse_clock(text: &str) -> Result<u32, String> {
    let bad = || format!("bad time {text:?} (use HH:MM or HH:MM:SS)");
    let parts: Vec<&str> = text.split(':').collect();
    if !(2..=3).contains(&parts.len()) || parts.iter().any(|p| p.len() != 2) {
        return Err(bad());
    }
    let mut numbers = [0u32; 3];
    for (slot, part) in numbers.iter_mut().zip(&parts) {
        *slot = part.parse().map_err(|_| bad())?;
    }
    let [h, m, s] = numbers;
    if m > 59 || s > 59 || h > 24 || (h == 24 && (m, s) != (0, 0)) {
        return Err(bad());
    }
    Ok(h * 3600 + m * 60 + s)
}

impl Window {
    /// Parses one window.
    pub fn parse(text: &str) -> Result<Window, ScheduleError> {
        let error = |reason: String| ScheduleError {
            text: text.to_owned(),
            reason,
        };
        let words: Vec<&str> = text.split_whitespace().collect();
        let (days, span, zone) = match words.as_slice() {
            [span, zone] => (0x7f, *span, *zone),
            [days, span, zone] => (parse_days(days).map_err(error)?, *span, *zone),
            _ => return Err(error("expected [DAYS] HH:MM-HH:MM ZONE".into())),
        };
        let (start, end) = span
            .split_once('-')
            .ok_or_else(|| error("expected a range HH:MM-HH:MM".into()))?;
        let (start, end) = (
            parse_clock(start).map_err(error)?,
            parse_clock(end).map_err(error)?,
        );
        if start == end {
            return Err(error("window is empty (start equals end)".into()));
        }
        if start == 86_400 {
            return Err(error("window cannot start at 24:00".into()));
        }
        let tz = TimeZone::get(zone).map_err(|e| error(format!("time zone {zone:?}: {e}")))?;
        Ok(Window {
            days,
            start,
            end,
            tz,
            text: text.to_owned(),
        })
    }

    fn opens_on(&self, day: Weekday) -> bool {
        self.days & (1 << day_index(day)) != 0
    }

    /// Whether the window is open at `now`.
    pub fn is_open(&self, now: Timestamp) -> bool {
        let local = now.to_zoned(self.tz.clone());
        let t = local.time();
        let secs = t.hour() as u32 * 3600 + t.minute() as u32 * 60 + t.second() as u32;
        let today = local.weekday();
        if self.start < self.end {
            self.opens_on(today) && secs >= self.start && secs < self.end
        } else {
            (self.opens_on(today) && secs >= self.start)
                || (self.opens_on(today.previous()) && secs < self.end)
        }
    }

    fn instant(&self, date: Date, secs: u32) -> Option<Timestamp> {
        let (date, secs) = if secs >= 86_400 {
            (date.tomorrow().ok()?, secs - 86_400)
        } else {
            (date, secs)
        };
        let civil = date.at(
            (secs / 3600) as i8,
            (secs / 60 % 60) as i8,
            (secs % 60) as i8,
            0,
        );
        // Compatible disambiguation: a boundary in a DST gap moves forward, in an overlap it
        // takes the first occurrence.
        civil
            .to_zoned(self.tz.clone())
            .ok()
            .map(|z: Zoned| z.timestamp())
    }

    /// The first opening or closing of this window strictly after `now`, within eight days.
    pub fn next_boundary(&self, now: Timestamp) -> Option<Timestamp> {
        let today = now.to_zoned(self.tz.clone()).date();
        let mut best: Option<Timestamp> = None;
        let mut date = today.yesterday().ok()?;
        for _ in 0..9 {
            if self.opens_on(date.weekday()) {
                let end = if self.start < self.end {
                    self.end
                } else {
                    self.end + 86_400
                };
                for secs in [self.start, end] {
                    if let Some(at) = self.instant(date, secs) {
                        if at > now && best.is_none_or(|b| at < b) {
                            best = Some(at);
                        }
                    }
                }
            }
            date = date.tomorrow().ok()?;
        }
        best
    }
}

impl std::fmt::Display for Window {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.text)
    }
}

/// Shipping windows; an empty schedule is always open.
#[derive(Debug, Clone, Default)]
pub struct Schedule {
    windows: Vec<Window>,
}

impl Schedule {
    /// A schedule that is always open.
    pub fn always() -> Schedule {
        Schedule::default()
    }

    /// Parses each window.
    pub fn parse<S: AsRef<str>>(windows: &[S]) -> Result<Schedule, ScheduleError> {
        Ok(Schedule {
            windows: windows
                .iter()
                .map(|w| Window::parse(w.as_ref()))
                .collect::<Result<_, _>>()?,
        })
    }

    /// Whether shipping is allowed at `now`.
    pub fn is_open(&self, now: Timestamp) -> bool {
        self.windows.is_empty() || self.windows.iter().any(|w| w.is_open(now))
    }

    /// When to look again: the next time any window opens or closes after `now` (`None` for
    /// an always-open schedule).
    pub fn next_change(&self, now: Timestamp) -> Option<Timestamp> {
        self.windows
            .iter()
            .filter_map(|w| w.next_boundary(now))
            .min()
    }

    /// When shipping is next allowed: `now` if a window is open, else the next opening within
    /// eight days (`None` if there is none, which a valid window always has).
    pub fn next_open(&self, now: Timestamp) -> Option<Timestamp> {
        let mut at = now;
        // Each step lands on a window boundary; a handful covers overlapping windows.
        for _ in 0..64 {
            if self.is_open(at) {
                return Some(at);
            }
            at = self.next_change(at)?;
        }
        None
    }

    /// Whether binlog events written now could expire from the source (binlog retention
    /// `retention`, from `binlog_expire_logs_seconds` or `expire_logs_days`) before the next
    /// window opens. Outside a window the spool fills and, at its bound, reading the binlog
    /// stops: the source must then keep its binlogs until shipping resumes.
    pub fn retention_at_risk(&self, now: Timestamp, retention: std::time::Duration) -> bool {
        let Some(open) = self.next_open(now) else {
            return true;
        };
        let wait = open.duration_since(now);
        std::time::Duration::try_from(wait).is_ok_and(|wait| wait >= retention)
    }

    /// Whether the schedule has no windows.
    pub fn is_always(&self) -> bool {
        self.windows.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> Timestamp {
        text.parse().expect("timestamp")
    }

    #[test]
    fn paris_night_window_follows_local_time_and_dst() {
        let w = Window::parse("01:00-06:00 Europe/Paris").expect("parse");
        // Winter: Paris is UTC+1.
        assert!(w.is_open(at("2025-01-15T00:30:00Z")));
        assert!(!w.is_open(at("2025-01-15T05:00:00Z")));
        assert!(!w.is_open(at("2025-01-14T23:59:59Z")));
        // Summer: UTC+2, so 23:30Z is 01:30 local.
        assert!(w.is_open(at("2025-07-14T23:30:00Z")));
        assert!(!w.is_open(at("2025-07-15T04:00:00Z")));
        assert_eq!(
            w.next_boundary(at("2025-01-15T00:30:00Z")),
            Some(at("2025-01-15T05:00:00Z"))
        );
        assert_eq!(
            w.next_boundary(at("2025-01-15T12:00:00Z")),
            Some(at("2025-01-16T00:00:00Z"))
        );
    }

    #[test]
    fn days_and_windows_past_midnight() {
        let w = Window::parse("Fri 22:00-02:00 UTC").expect("parse");
        // 2025-01-17 is a Friday.
        assert!(w.is_open(at("2025-01-17T23:00:00Z")));
        assert!(w.is_open(at("2025-01-18T01:59:59Z")), "runs into Saturday");
        assert!(
            !w.is_open(at("2025-01-18T23:00:00Z")),
            "does not open on Saturday"
        );
        assert!(
            !w.is_open(at("2025-01-17T01:00:00Z")),
            "Thursday night is not Friday's"
        );
        assert_eq!(
            w.next_boundary(at("2025-01-18T12:00:00Z")),
            Some(at("2025-01-24T22:00:00Z"))
        );
        let weekend = Window::parse("Sat,Sun 00:00-24:00 UTC").expect("parse");
        assert!(weekend.is_open(at("2025-01-19T23:59:59Z")));
        assert!(!weekend.is_open(at("2025-01-20T00:00:00Z")));
        let workdays = Window::parse("Mon-Fri 09:00:30-09:00:45 UTC").expect("parse");
        assert!(workdays.is_open(at("2025-01-20T09:00:40Z")));
        assert!(!workdays.is_open(at("2025-01-19T09:00:40Z")));
    }

    #[test]
    fn schedule_is_open_when_any_window_is() {
        let s = Schedule::parse(&["01:00-02:00 UTC", "03:00-04:00 UTC"]).expect("parse");
        assert!(s.is_open(at("2025-01-01T03:30:00Z")));
        assert!(!s.is_open(at("2025-01-01T02:30:00Z")));
        assert_eq!(
            s.next_change(at("2025-01-01T02:30:00Z")),
            Some(at("2025-01-01T03:00:00Z"))
        );
        assert!(Schedule::always().is_open(at("2025-01-01T02:30:00Z")));
    }

    #[test]
    fn next_open_and_binlog_retention() {
        let s = Schedule::parse(&["Sat 01:00-05:00 UTC"]).expect("parse");
        // 2025-01-13 is a Monday: the next opening is Saturday 01:00.
        let monday = at("2025-01-13T12:00:00Z");
        assert_eq!(s.next_open(monday), Some(at("2025-01-18T01:00:00Z")));
        assert!(s.retention_at_risk(monday, std::time::Duration::from_secs(86_400)));
        assert!(!s.retention_at_risk(monday, std::time::Duration::from_secs(7 * 86_400)));
        let inside = at("2025-01-18T02:00:00Z");
        assert_eq!(s.next_open(inside), Some(inside));
        assert!(!Schedule::always().retention_at_risk(monday, std::time::Duration::from_secs(1)));
    }

    #[test]
    fn bad_windows_say_why() {
        for (text, why) in [
            ("01:00-06:00", "expected [DAYS]"),
            ("1:00-06:00 UTC", "bad time"),
            ("01:00-25:00 UTC", "bad time"),
            ("01:00-01:00 UTC", "empty"),
            ("Funday 01:00-02:00 UTC", "unknown day"),
            ("01:00-02:00 Mars/Olympus", "time zone"),
        ] {
            let err = Window::parse(text).expect_err(text).to_string();
            assert!(err.contains(why), "{text}: {err}");
        }
    }
}
