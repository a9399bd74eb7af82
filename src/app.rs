//! What every connection shares: the validated config, the upstream pool, the learned-hints
//! store and the metrics. A reload builds a new `App`; connections keep the one they started with.

use std::sync::Arc;

use crate::config::Config;
use crate::front::h2::digest::Freshness;
use crate::learn::LearnStore;
use crate::metrics::Metrics;
use crate::upstream::Upstream;

pub struct App {
    pub config: Arc<Config>,
    pub upstream: Upstream,
    /// `None` when `learn.enabled = false`.
    pub learn: Option<Arc<LearnStore>>,
    pub metrics: Metrics,
    /// Pushed assets' freshness and the clock of the cache digest cookie; survives reloads.
    pub push_freshness: Arc<Freshness>,
}

impl App {
    pub fn new(config: Arc<Config>, metrics: Metrics) -> Self {
        let upstream = Upstream::new(&config.upstream, metrics.clone());
        let learn = config
            .learn
            .enabled
            .then(|| Arc::new(LearnStore::new(&config.learn, metrics.clone())));
        App {
            config,
            upstream,
            learn,
            metrics,
            push_freshness: Arc::default(),
        }
    }

    /// The app for a reloaded config: the learned routes survive when learning stays on with
    /// the same bounds, and the upstream pool survives when the upstream did not change.
    pub fn reloaded(&self, config: Arc<Config>) -> Self {
        let upstream = if config.upstream == self.config.upstream {
            self.upstream.clone()
        } else {
            Upstream::new(&config.upstream, self.metrics.clone())
        };
        let learn = if config.learn == self.config.learn {
            self.learn.clone()
        } else {
            config
                .learn
                .enabled
                .then(|| Arc::new(LearnStore::new(&config.learn, self.metrics.clone())))
        };
        App {
            config,
            upstream,
            learn,
            metrics: self.metrics.clone(),
            push_freshness: self.push_freshness.clone(),
        }
    }
}
