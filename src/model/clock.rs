//! The time an operation reads: the system clock, or a fixed instant in tests.

use std::sync::Arc;

use chrono::{DateTime, Utc};

/// Where operations read "now" from. The default is the system clock.
#[derive(Clone, Default)]
pub struct Clock(Option<Arc<dyn Fn() -> DateTime<Utc> + Send + Sync>>);

impl Clock {
    /// A clock that always reads `at`.
    pub fn fixed(at: DateTime<Utc>) -> Clock {
        Clock(Some(Arc::new(move || at)))
    }

    pub fn now(&self) -> DateTime<Utc> {
        match &self.0 {
            Some(read) => read(),
            None => Utc::now(),
        }
    }
}

impl std::fmt::Debug for Clock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() {
            "Clock(fixed)"
        } else {
            "Clock(system)"
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fixed_clock_reads_its_instant_and_the_default_reads_the_system() {
        let at = DateTime::parse_from_rfc3339("2024-05-01T10:00:00Z")
            .expect("a time")
            .with_timezone(&Utc);
        assert_eq!(Clock::fixed(at).now(), at);
        let before = Utc::now();
        let read = Clock::default().now();
        assert!(read >= before && read <= Utc::now());
    }
}
