//! The numbers the engine records, as a debugging recorder installed once per process
//! sees them (each snapshot drains the counters and histograms: it holds what was recorded
//! since the previous one).

use std::sync::OnceLock;

use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};

/// What one snapshot held.
pub struct Recorded(Vec<(metrics_util::CompositeKey, DebugValue)>);

/// Installs the recorder on first use; every later call shares it.
pub fn snapshotter() -> &'static Snapshotter {
    static SNAPSHOTTER: OnceLock<Snapshotter> = OnceLock::new();
    SNAPSHOTTER.get_or_init(|| {
        let recorder = DebuggingRecorder::new();
        let snapshotter = recorder.snapshotter();
        recorder
            .install()
            .expect("no other metrics recorder in this process");
        snapshotter
    })
}

/// What was recorded since the previous call.
pub fn recorded() -> Recorded {
    let values = snapshotter()
        .snapshot()
        .into_vec()
        .into_iter()
        .map(|(key, _, _, value)| (key, value))
        .collect();
    Recorded(values)
}

impl Recorded {
    fn matching<'a>(
        &'a self,
        name: &'a str,
        labels: &'a [(&'a str, &'a str)],
    ) -> impl Iterator<Item = &'a DebugValue> + 'a {
        self.0
            .iter()
            .filter(move |(key, _)| key.key().name() == name)
            .filter(move |(key, _)| {
                labels.iter().all(|(k, v)| {
                    key.key()
                        .labels()
                        .any(|label| label.key() == *k && label.value() == *v)
                })
            })
            .map(|(_, value)| value)
    }

    /// The sum of the counters `name` carrying every label of `labels`.
    pub fn counter(&self, name: &str, labels: &[(&str, &str)]) -> u64 {
        self.matching(name, labels)
            .map(|value| match value {
                DebugValue::Counter(n) => *n,
                _ => 0,
            })
            .sum()
    }

    /// The samples of the histograms `name` carrying every label of `labels`.
    pub fn samples(&self, name: &str, labels: &[(&str, &str)]) -> Vec<f64> {
        self.matching(name, labels)
            .flat_map(|value| match value {
                DebugValue::Histogram(samples) => samples.iter().map(|s| s.0).collect(),
                _ => Vec::new(),
            })
            .collect()
    }
}
