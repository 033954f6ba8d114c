//! Which tenant's job goes to the workers next, when several tenants have work waiting in the same
//! priority class: stride scheduling (Waldspurger and Weihl, 1995). Each tenant has a virtual
//! "pass"; the waiting tenant with the lowest pass is served and its pass advances by
//! `1 / weight`, so over any stretch in which tenants keep work waiting they are served in
//! proportion to their weights. A tenant that had nothing waiting starts again at the class's
//! current pass: idle time is not saved up as credit for a burst later.
//!
//! Written by hand: the selection runs over queues that live in the broker, which no scheduling
//! crate models, and it is a few lines of arithmetic.

use std::collections::HashMap;

use rapid_proto::Priority;

/// Weight of a tenant that the configuration does not list (its jobs are still served).
const DEFAULT_WEIGHT: u32 = 1;

#[derive(Debug, Default)]
pub struct FairShare {
    weights: HashMap<String, u32>,
    interactive: Passes,
    batch: Passes,
}

#[derive(Debug, Default)]
struct Passes {
    pass: HashMap<String, f64>,
    /// The pass of the last tenant served: where a tenant that was idle starts again.
    now: f64,
}

impl FairShare {
    /// `weights`: each tenant's share; zero is treated as one (a tenant is never starved).
    pub fn new<'a>(weights: impl IntoIterator<Item = (&'a str, u32)>) -> Self {
        let weights = weights.into_iter().map(|(tenant, weight)| (tenant.to_owned(), weight.max(1))).collect();
        Self { weights, ..Self::default() }
    }

    /// Among the tenants with work `waiting` in `class`, the one to serve next. Ties go to the
    /// tenant listed first, so the choice is deterministic. Nothing is charged until [`served`]:
    /// a tenant whose lane turned out empty keeps its place.
    ///
    /// [`served`]: Self::served
    pub fn pick<'a>(&self, class: Priority, waiting: &[&'a str]) -> Option<&'a str> {
        let passes = self.passes(class);
        waiting
            .iter()
            .map(|tenant| (*tenant, passes.start(tenant)))
            .fold(None, |best, (tenant, pass)| match best {
                Some((_, best_pass)) if best_pass <= pass => best,
                _ => Some((tenant, pass)),
            })
            .map(|(tenant, _)| tenant)
    }

    /// Charges `tenant` one job of `class`.
    pub fn served(&mut self, class: Priority, tenant: &str) {
        let weight = self.weights.get(tenant).copied().unwrap_or(DEFAULT_WEIGHT);
        let passes = match class {
            Priority::Interactive => &mut self.interactive,
            Priority::Batch => &mut self.batch,
        };
        let pass = passes.start(tenant);
        passes.now = pass;
        passes.pass.insert(tenant.to_owned(), pass + 1.0 / f64::from(weight));
    }

    fn passes(&self, class: Priority) -> &Passes {
        match class {
            Priority::Interactive => &self.interactive,
            Priority::Batch => &self.batch,
        }
    }
}

impl Passes {
    fn start(&self, tenant: &str) -> f64 {
        self.pass.get(tenant).copied().unwrap_or(0.0).max(self.now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn served(fair: &mut FairShare, class: Priority, waiting: &[&str], picks: usize) -> HashMap<String, usize> {
        let mut counts = HashMap::new();
        for _ in 0..picks {
            let tenant = fair.pick(class, waiting).unwrap();
            fair.served(class, tenant);
            *counts.entry(tenant.to_owned()).or_default() += 1;
        }
        counts
    }

    #[test]
    fn tenants_that_keep_work_waiting_are_served_in_proportion_to_their_weights() {
        let mut fair = FairShare::new([("acme", 3), ("globex", 1), ("initech", 2)]);
        let counts = served(&mut fair, Priority::Batch, &["acme", "globex", "initech"], 600);
        for (tenant, expected) in [("acme", 300), ("globex", 100), ("initech", 200)] {
            assert!(counts[tenant].abs_diff(expected) <= 1, "{tenant}: {counts:?}");
        }
    }

    #[test]
    fn equal_weights_alternate_from_the_first_pick() {
        let mut fair = FairShare::new([("acme", 1), ("globex", 1)]);
        let order: Vec<_> = (0..6)
            .map(|_| {
                let tenant = fair.pick(Priority::Batch, &["acme", "globex"]).unwrap();
                fair.served(Priority::Batch, tenant);
                tenant
            })
            .collect();
        assert_eq!(order, ["acme", "globex", "acme", "globex", "acme", "globex"]);
    }

    #[test]
    fn a_tenant_that_was_idle_gets_its_share_not_a_burst() {
        let mut fair = FairShare::new([("acme", 1), ("globex", 1)]);
        served(&mut fair, Priority::Batch, &["acme"], 100);
        let counts = served(&mut fair, Priority::Batch, &["acme", "globex"], 10);
        assert_eq!((counts["acme"], counts["globex"]), (5, 5), "globex saved no credit while idle: {counts:?}");
    }

    #[test]
    fn classes_keep_separate_accounts() {
        let mut fair = FairShare::new([("acme", 1), ("globex", 1)]);
        served(&mut fair, Priority::Batch, &["acme"], 50);
        let counts = served(&mut fair, Priority::Interactive, &["acme", "globex"], 4);
        assert_eq!((counts["acme"], counts["globex"]), (2, 2), "{counts:?}");
    }

    #[test]
    fn a_pick_that_is_not_served_costs_nothing() {
        let mut fair = FairShare::new([("acme", 1), ("globex", 1)]);
        for _ in 0..100 {
            // globex is picked while it has nothing waiting (its lane is found empty): no charge.
            assert_eq!(fair.pick(Priority::Batch, &["globex"]), Some("globex"));
            fair.served(Priority::Batch, "acme");
        }
        let counts = served(&mut fair, Priority::Batch, &["acme", "globex"], 10);
        assert_eq!((counts["acme"], counts["globex"]), (5, 5), "{counts:?}");
    }

    #[test]
    fn unlisted_and_zero_weight_tenants_are_still_served() {
        let mut fair = FairShare::new([("acme", 0)]);
        let counts = served(&mut fair, Priority::Batch, &["acme", "stranger"], 10);
        assert_eq!((counts["acme"], counts["stranger"]), (5, 5), "{counts:?}");
        assert_eq!(fair.pick(Priority::Batch, &[]), None, "nobody waiting, nobody served");
    }
}
