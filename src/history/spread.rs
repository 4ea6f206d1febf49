//! The arithmetic of a history import, pure: where the data has holes, and
//! how per-bin counts become whole arrivals per second.
//!
//! CloudWatch gives a count per minute and Prometheus a rate per step; the
//! simulator wants whole messages per second. Both are bins of known width
//! holding a (possibly fractional) number of messages. A bin's messages are
//! spread evenly over its seconds, and the fraction left over at the end of
//! a second is carried into the next, so integer bins give integer seconds
//! that sum to exactly the bin, and fractional bins lose less than one
//! message over the whole trace. This is the spreading `Trace::parse_csv`
//! does for a CSV row, so a per-minute CSV written from an import reads back
//! as the same seconds.
//!
//! Missing bins are never read as zero silently: [`Coverage::of`] finds the
//! first and last bin with data and every run of missing bins between them,
//! and the caller refuses those gaps or fills them as asked.

/// Slack for floating-point error when a carried sum should be a whole
/// number (a rate times a step is rarely exact): a millionth of a message.
const EPSILON: f64 = 1e-6;

/// A run of bins without data, inside the covered span.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Gap {
    /// Index of the first missing bin.
    pub first: usize,
    /// Number of missing bins in a row.
    pub len: usize,
}

/// Which bins of a range hold data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Coverage {
    /// The first bin with data.
    pub first: usize,
    /// One past the last bin with data.
    pub end: usize,
    /// Runs of missing bins between `first` and `end`, in order.
    pub gaps: Vec<Gap>,
}

impl Coverage {
    /// The coverage of `bins`; `None` when no bin has data.
    pub fn of(bins: &[Option<f64>]) -> Option<Coverage> {
        let first = bins.iter().position(Option::is_some)?;
        let end = bins.iter().rposition(Option::is_some)? + 1;
        let mut gaps = Vec::new();
        let mut run: Option<Gap> = None;
        for (i, b) in bins.iter().enumerate().take(end).skip(first) {
            match (b, run.as_mut()) {
                (None, Some(g)) => g.len += 1,
                (None, None) => run = Some(Gap { first: i, len: 1 }),
                (Some(_), _) => gaps.extend(run.take()),
            }
        }
        Some(Coverage { first, end, gaps })
    }

    /// Missing bins inside the covered span.
    pub fn missing(&self) -> usize {
        self.gaps.iter().map(|g| g.len).sum()
    }
}

/// Whole arrivals per second from `bins` messages per bin of `width`
/// seconds: each bin spread evenly over its seconds, fractions carried
/// forward (see the module doc). Negative or non-finite bins count as 0;
/// the caller has refused them already.
pub fn spread(bins: &[f64], width: u64) -> Vec<u64> {
    let width = width.max(1);
    let mut out = Vec::with_capacity(bins.len() * width as usize);
    let mut carry = 0.0_f64;
    for &messages in bins {
        let messages = if messages.is_finite() && messages > 0.0 {
            messages
        } else {
            0.0
        };
        // Cumulative within the bin, from the carried fraction, so the
        // magnitudes stay small and a whole bin ends on a whole number.
        let mut taken = 0.0_f64;
        for s in 1..=width {
            let upto = carry + messages * s as f64 / width as f64;
            let whole = (upto + EPSILON).floor();
            out.push((whole - taken).max(0.0) as u64);
            taken = whole;
        }
        carry = (carry + messages - taken).max(0.0);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_minute_of_n_messages_becomes_whole_seconds_summing_to_exactly_n() {
        for n in [0u64, 1, 7, 59, 60, 61, 119, 1000, 123_457] {
            let got = spread(&[n as f64], 60);
            assert_eq!(got.len(), 60, "{n}");
            assert_eq!(got.iter().sum::<u64>(), n, "{n}");
            let (lo, hi) = (n / 60, n.div_ceil(60));
            assert!(
                got.iter().all(|&c| c == lo || c == hi),
                "{n}: evenly spread, got {got:?}"
            );
        }
    }

    #[test]
    fn every_minute_of_a_week_keeps_its_exact_count() {
        let minutes: Vec<f64> = (0..7 * 1440).map(|i| ((i * 37) % 251) as f64).collect();
        let seconds = spread(&minutes, 60);
        assert_eq!(seconds.len(), minutes.len() * 60);
        for (i, chunk) in seconds.chunks(60).enumerate() {
            assert_eq!(chunk.iter().sum::<u64>() as f64, minutes[i], "minute {i}");
        }
    }

    #[test]
    fn spreading_is_the_same_as_reading_the_counts_back_from_a_csv() {
        let minutes = [0.0, 5.0, 61.0, 3.0, 0.0, 200.0];
        let mut csv = String::from("t_seconds,arrivals\n");
        for (i, m) in minutes.iter().enumerate() {
            csv.push_str(&format!("{},{m}\n", i * 60));
        }
        let read = crate::world::trace::Trace::parse_csv(&csv, std::path::Path::new("x.csv"))
            .expect("valid csv");
        assert_eq!(read.per_second, spread(&minutes, 60));
    }

    #[test]
    fn fractional_bins_lose_less_than_one_message_over_the_whole_trace() {
        // A rate of 0.35/s over 60 s steps is 21 messages; 1/3 msg/s over
        // 10 s steps is 3.33..; fractions carry from bin to bin.
        for (bins, width) in [
            (vec![0.35 * 60.0; 100], 60u64),
            (vec![10.0 / 3.0; 1000], 10),
            (vec![0.2, 0.2, 0.2, 0.2, 0.2], 1),
        ] {
            let want: f64 = bins.iter().sum();
            let got = spread(&bins, width).iter().sum::<u64>() as f64;
            assert!(
                got <= want + EPSILON && want - got < 1.0,
                "want {want}, got {got}"
            );
        }
        // Five fifths make one message, in the fifth second.
        assert_eq!(spread(&[0.2; 5], 1), vec![0, 0, 0, 0, 1]);
    }

    #[test]
    fn negative_and_non_finite_bins_spread_as_nothing() {
        assert_eq!(spread(&[-3.0, f64::NAN, f64::INFINITY], 2), vec![0; 6]);
    }

    #[test]
    fn coverage_finds_the_data_span_and_every_gap_inside_it() {
        let b = |s: &str| -> Vec<Option<f64>> {
            s.chars()
                .map(|c| (c == 'x').then_some(1.0))
                .collect::<Vec<_>>()
        };
        assert_eq!(Coverage::of(&b("....")), None);
        assert_eq!(Coverage::of(&[]), None);
        assert_eq!(
            Coverage::of(&b("xxxx")),
            Some(Coverage {
                first: 0,
                end: 4,
                gaps: vec![]
            })
        );
        let c = Coverage::of(&b("..xx..x.xxx...")).expect("has data");
        assert_eq!((c.first, c.end), (2, 11));
        assert_eq!(
            c.gaps,
            vec![Gap { first: 4, len: 2 }, Gap { first: 7, len: 1 }]
        );
        assert_eq!(c.missing(), 3);
    }

    #[test]
    fn a_zero_is_data_not_a_gap() {
        let c = Coverage::of(&[Some(0.0), Some(0.0), Some(3.0)]).expect("has data");
        assert!(c.gaps.is_empty());
        assert_eq!((c.first, c.end), (0, 3));
    }
}
