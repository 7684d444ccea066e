//! Properties of the pairing engine against a brute-force reading of the
//! join spec: the same pair set for every interleaving, no pair twice,
//! bounded state, and rebuilding from the oldest retained record.

mod replay;

use std::collections::BTreeSet;

use millrace_join::engine::{KeyState, Pairing, PairingOptions, Side, Time};
use proptest::prelude::*;

/// The spec's definition, directly: pairs as (left index, right index).
fn brute_force(l: &[Time], r: &[Time], options: &PairingOptions, complete: bool) -> BTreeSet<(usize, usize)> {
    let mut pairs = BTreeSet::new();
    let mut add = |x_is_left: bool, x: usize, y: usize| {
        let (li, ri) = if x_is_left { (x, y) } else { (y, x) };
        if let Some(d) = options.max_delta {
            if (l[li] - r[ri]).abs() > d {
                return;
            }
        }
        pairs.insert((li, ri));
    };
    for (x_is_left, xs, ys) in [(true, l, r), (false, r, l)] {
        for (i, &t) in xs.iter().enumerate() {
            let next = ys.iter().position(|&y| y >= t);
            let prev = ys.iter().rposition(|&y| y < t);
            if let Some(n) = next {
                add(x_is_left, i, n);
            }
            if let Some(p) = prev {
                if next.is_some() || complete {
                    add(x_is_left, i, p);
                }
            }
        }
    }
    pairs
}

/// Arrival order: `choices[k]` picks the side of the k-th arrival while both
/// sides have records left.
fn interleave(l: &[Time], r: &[Time], choices: &[bool]) -> Vec<(Side, usize)> {
    let (mut i, mut j, mut k) = (0, 0, 0);
    let mut out = Vec::new();
    while i < l.len() || j < r.len() {
        let take_left = if i == l.len() {
            false
        } else if j == r.len() {
            true
        } else {
            let c = choices.get(k).copied().unwrap_or(true);
            k += 1;
            c
        };
        if take_left {
            out.push((Side::Left, i));
            i += 1;
        } else {
            out.push((Side::Right, j));
            j += 1;
        }
    }
    out
}

struct Run {
    pairs: Vec<(usize, usize)>,
    max_excess_state: isize,
    /// The first arrival after which the pairs emitted so far were not the
    /// spec's pairs of the records arrived so far: (arrivals, got, wanted).
    wrong_after: Option<(usize, BTreeSet<(usize, usize)>, BTreeSet<(usize, usize)>)>,
}

fn run(l: &[Time], r: &[Time], order: &[(Side, usize)], options: &PairingOptions, complete: bool) -> Run {
    let mut key: KeyState<(Side, usize)> = KeyState::default();
    let mut pairs = Vec::new();
    let mut max_excess_state = isize::MIN;
    let (mut newest_l, mut newest_r) = (Time::MIN, Time::MIN);
    let (mut nl, mut nr) = (0, 0);
    let mut wrong_after = None;
    for (seq, &(side, i)) in order.iter().enumerate() {
        let t = if side == Side::Left { l[i] } else { r[i] };
        key.push(side, t, seq as u64, (side, i), options, &mut |p| pairs.push((p.left.1, p.right.1))).unwrap();
        if side == Side::Left {
            newest_l = t;
            nl += 1;
        } else {
            newest_r = t;
            nr += 1;
        }
        // As soon as certain: after every arrival, exactly the pairs that the
        // records arrived so far make certain.
        if wrong_after.is_none() {
            let (got, want): (BTreeSet<_>, _) = (pairs.iter().copied().collect(), brute_force(&l[..nl], &r[..nr], options, false));
            if got != want {
                wrong_after = Some((seq + 1, got, want));
            }
        }
        // What the spec lets a key hold: each side's records at or after the
        // other side's newest, plus one before.
        let arrived = |s: Side| {
            order[..=seq].iter().filter(move |(x, _)| *x == s).map(move |(_, i)| if s == Side::Left { l[*i] } else { r[*i] })
        };
        let needed = arrived(Side::Left).filter(|&t| t >= newest_r).count() + arrived(Side::Right).filter(|&t| t >= newest_l).count() + 2;
        max_excess_state = max_excess_state.max(key.len() as isize - needed as isize);
    }
    if complete {
        key.complete(u64::MAX, options, &mut |p| pairs.push((p.left.1, p.right.1)));
    }
    Run { pairs, max_excess_state, wrong_after }
}

fn sorted_series(max_len: usize) -> impl Strategy<Value = Vec<Time>> {
    // Small time range: many ties, within and across sides.
    prop::collection::vec(0i64..40, 0..max_len).prop_map(|mut v| {
        v.sort();
        v
    })
}

fn options() -> impl Strategy<Value = PairingOptions> {
    prop_oneof![Just(None), (0i64..10).prop_map(Some)].prop_map(|max_delta| PairingOptions { max_delta, ..Default::default() })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    #[test]
    fn output_is_the_spec_pair_set_once_for_every_interleaving(
        l in sorted_series(25),
        r in sorted_series(25),
        interleavings in prop::collection::vec(prop::collection::vec(any::<bool>(), 50), 4),
        options in options(),
        complete in any::<bool>(),
    ) {
        let want = brute_force(&l, &r, &options, complete);
        for choices in &interleavings {
            let order = interleave(&l, &r, choices);
            let got = run(&l, &r, &order, &options, complete);
            let set: BTreeSet<_> = got.pairs.iter().copied().collect();
            prop_assert_eq!(set.len(), got.pairs.len(), "a pair was emitted twice: {:?}", got.pairs);
            prop_assert_eq!(&set, &want);
            prop_assert!(got.wrong_after.is_none(), "not the spec's pairs after every arrival (arrivals, got, wanted): {:?}", got.wrong_after);
            prop_assert!(got.max_excess_state <= 0, "state held {} records more than needed", got.max_excess_state);
        }
    }

    /// With `maxDelta`, and with the join stage's bounded replay. Not with
    /// `maxLatency`: a replay is exact with it only for data less late than
    /// it (its own determinism bound), and these interleavings have no bound
    /// (a replay then gave a record a second early pair); join_horizon.rs
    /// checks it in interleavings within the bound.
    #[test]
    fn rebuilding_from_the_oldest_retained_record_changes_nothing(
        l in sorted_series(25),
        r in sorted_series(25),
        choices in prop::collection::vec(any::<bool>(), 50),
        cut_at in 0usize..50,
        max_delta in prop_oneof![Just(None), (0i64..10).prop_map(Some)],
        limit in prop_oneof![Just(None), (0usize..10).prop_map(Some)],
    ) {
        let options = PairingOptions { max_delta, ..Default::default() };
        let order = interleave(&l, &r, &choices);
        let cut = cut_at.min(order.len());
        // Unbounded, or a bounded replay with the older held records restored.
        let (emitted, want) = match limit {
            Some(limit) => replay::across_a_crash_with_a_state_copy(&l, &r, &order, &options, cut, limit),
            None => replay::across_a_crash(&l, &r, &order, &options, cut),
        };
        prop_assert_eq!(emitted, want);
    }

    #[test]
    fn a_reorder_window_puts_slightly_late_records_back_in_order(
        l in sorted_series(20),
        r in sorted_series(20),
        l_jitter in prop::collection::vec(0i64..5, 20),
        r_jitter in prop::collection::vec(0i64..5, 20),
        choices in prop::collection::vec(any::<bool>(), 40),
    ) {
        const WINDOW: Time = 5;
        // Each side arrives out of order by less than the window.
        let shuffle = |series: &[Time], jitter: &[i64]| {
            let mut order: Vec<usize> = (0..series.len()).collect();
            order.sort_by_key(|&i| (series[i] + jitter[i], i));
            order
        };
        let (lo, ro) = (shuffle(&l, &l_jitter), shuffle(&r, &r_jitter));
        let sides = interleave(&vec![0; lo.len()], &vec![0; ro.len()], &choices);
        let (mut li, mut ri) = (lo.iter(), ro.iter());
        let mut pairing: Pairing<(Side, usize)> = Pairing::new(PairingOptions { reorder_window: Some(WINDOW), ..Default::default() });
        let mut pairs = Vec::new();
        for (seq, (side, _)) in sides.iter().enumerate() {
            let i = *if *side == Side::Left { li.next() } else { ri.next() }.unwrap();
            let t = if *side == Side::Left { l[i] } else { r[i] };
            let accepted = pairing.push(0, *side, t, seq as u64, (*side, i), &mut |p| pairs.push((p.left.1, p.right.1)));
            prop_assert!(accepted.is_ok(), "a record within the window was called late");
        }
        pairing.complete(u64::MAX, &mut |_, p| pairs.push((p.left.1, p.right.1)));
        let set: BTreeSet<_> = pairs.iter().copied().collect();
        prop_assert_eq!(set.len(), pairs.len(), "a pair was emitted twice");
        // The spec over each side in time order, equal times in arrival order.
        let canonical = |series: &[Time], arrival: &[usize]| {
            let mut order = arrival.to_vec();
            order.sort_by_key(|&i| series[i]); // stable: ties keep arrival order
            order
        };
        let (lc, rc) = (canonical(&l, &lo), canonical(&r, &ro));
        let lt: Vec<Time> = lc.iter().map(|&i| l[i]).collect();
        let rt: Vec<Time> = rc.iter().map(|&i| r[i]).collect();
        let want: BTreeSet<(usize, usize)> =
            brute_force(&lt, &rt, &PairingOptions::default(), true).into_iter().map(|(a, b)| (lc[a], rc[b])).collect();
        prop_assert_eq!(set, want);
    }
}
