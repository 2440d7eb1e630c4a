//! Our metric types as prometheus-client encodes them: the families of a scrape ([`families`]),
//! counters named the way the 0.0.4 text format names them, one metric per value of a
//! bounded label set, and families read at scrape time.
//!
//! Why not prometheus-client's own `Counter` and `Family`: its counter follows
//! OpenMetrics, declaring the family without `_total` (`# TYPE x counter`, then
//! `x_total 3`), which a 0.0.4 parser (and our pinned names) reads as a sample outside any
//! family; and `Family` finds its metric in a locked map, where ours index an array.

use std::fmt;
use std::marker::PhantomData;
use std::sync::atomic::{AtomicU64, Ordering};

use prometheus_client::encoding::{
    DescriptorEncoder, EncodeGaugeValue, EncodeLabelSet, EncodeMetric, MetricEncoder,
};
use prometheus_client::metrics::{MetricType, TypedMetric};

/// Writes each `(name, help, metric)` family: its `# HELP` and `# TYPE` lines, then the
/// metric's samples.
pub fn families(
    mut encoder: DescriptorEncoder,
    families: &[(&str, &str, &dyn EncodeMetric)],
) -> fmt::Result {
    for &(name, help, metric) in families {
        metric.encode(encoder.encode_descriptor(name, help, None, metric.metric_type())?)?;
    }
    Ok(())
}

/// A counter bumped with a relaxed atomic add, whose family name carries its `_total`
/// suffix: `# TYPE x_total counter`, then `x_total 3`, as scrapers have always read it.
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    /// Counts one.
    pub fn inc(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }

    /// The count so far.
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

impl TypedMetric for Counter {
    const TYPE: MetricType = MetricType::Counter;
}

impl EncodeMetric for Counter {
    fn encode(&self, mut encoder: MetricEncoder) -> fmt::Result {
        // The text encoder's gauge sample is the bare `name value` the 0.0.4 format wants;
        // its counter sample would append a second `_total`.
        encoder.encode_gauge(&self.get())
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Counter
    }
}

/// A label with a bounded set of values, each spelled once.
pub trait Label: Copy + PartialEq + Send + Sync + 'static {
    /// The label's name.
    const KEY: &'static str;
    /// Every value the exposition shows, in its order.
    const VALUES: &'static [Self];
    /// The value as the exposition spells it.
    fn as_str(self) -> &'static str;
    /// The value's place in [`Label::VALUES`].
    fn index(self) -> usize;
}

/// One metric per value of label `L`, found by index: no map and no lock on the hot path,
/// and every value shown from the first scrape on (a dashboard sees zeros, not gaps).
#[derive(Debug)]
pub struct ByLabel<L, M> {
    metrics: Box<[M]>,
    label: PhantomData<L>,
}

impl<L: Label, M> ByLabel<L, M> {
    /// A metric made by `make` for each value of `L`.
    pub fn new(make: impl FnMut() -> M) -> Self {
        ByLabel {
            metrics: std::iter::repeat_with(make).take(L::VALUES.len()).collect(),
            label: PhantomData,
        }
    }

    /// The metric of `value`.
    pub fn get(&self, value: L) -> &M {
        &self.metrics[value.index()]
    }
}

impl<L: Label, M: EncodeMetric + TypedMetric> EncodeMetric for ByLabel<L, M> {
    fn encode(&self, mut encoder: MetricEncoder) -> fmt::Result {
        for (value, metric) in L::VALUES.iter().zip(&self.metrics) {
            metric.encode(encoder.encode_family(&[(L::KEY, value.as_str())])?)?;
        }
        Ok(())
    }

    fn metric_type(&self) -> MetricType {
        M::TYPE
    }
}

/// One family's samples as read at scrape time: a value per label set.
#[derive(Debug)]
pub struct Samples<S, V> {
    kind: MetricType,
    samples: Vec<(S, V)>,
}

impl<S: EncodeLabelSet, V: EncodeGaugeValue> Samples<S, V> {
    /// Gauges.
    pub fn gauges(samples: impl IntoIterator<Item = (S, V)>) -> Self {
        Samples {
            kind: MetricType::Gauge,
            samples: samples.into_iter().collect(),
        }
    }

    /// Counters (named with their `_total`, as `Counter`).
    pub fn counters(samples: impl IntoIterator<Item = (S, V)>) -> Self {
        Samples {
            kind: MetricType::Counter,
            samples: samples.into_iter().collect(),
        }
    }
}

impl<S: EncodeLabelSet, V: EncodeGaugeValue> EncodeMetric for Samples<S, V> {
    fn encode(&self, mut encoder: MetricEncoder) -> fmt::Result {
        for (labels, value) in &self.samples {
            encoder.encode_family(labels)?.encode_gauge(value)?;
        }
        Ok(())
    }

    fn metric_type(&self) -> MetricType {
        self.kind
    }
}

/// `metric` encoded as family `name` alone, for tests.
#[cfg(test)]
pub(super) fn encoded(
    name: &str,
    metric: impl EncodeMetric + Send + Sync + fmt::Debug + 'static,
) -> String {
    let mut registry = prometheus_client::registry::Registry::default();
    registry.register(name, "Help", metric);
    let mut out = String::new();
    prometheus_client::encoding::text::encode_registry(&mut out, &registry)
        .expect("writing to a String cannot fail");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Clone, Copy, PartialEq)]
    enum Color {
        Red,
        Blue,
    }

    impl Label for Color {
        const KEY: &'static str = "color";
        const VALUES: &'static [Color] = &[Color::Red, Color::Blue];
        fn as_str(self) -> &'static str {
            ["red", "blue"][self.index()]
        }
        fn index(self) -> usize {
            self as usize
        }
    }

    #[test]
    fn counters_keep_their_total_suffix_in_the_family_name() {
        let c = Counter::default();
        c.inc();
        c.inc();
        assert_eq!(
            encoded("x_total", c),
            "# HELP x_total Help.\n# TYPE x_total counter\nx_total 2\n"
        );
    }

    #[test]
    fn a_metric_per_label_value_and_every_value_shown() {
        let by: ByLabel<Color, Counter> = ByLabel::new(Counter::default);
        by.get(Color::Blue).inc();
        assert_eq!(
            encoded("x_total", by),
            "# HELP x_total Help.\n# TYPE x_total counter\n\
             x_total{color=\"red\"} 0\nx_total{color=\"blue\"} 1\n"
        );
    }
}
