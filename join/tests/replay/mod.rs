//! A crash and a replay, as the join stage does them: what was emitted
//! before the crash stays emitted; a new engine replays from the oldest
//! record the old one still held and suppresses the pairs triggered before
//! the crash.

use millrace_join::engine::{KeyState, PairingOptions, Side, Time};

/// Runs `order` whole and with a crash before arrival `cut`; returns the
/// pairs (left, right) emitted across the crash and those of the
/// uninterrupted run, both sorted.
#[allow(dead_code)]
pub fn across_a_crash(l: &[Time], r: &[Time], order: &[(Side, usize)], options: &PairingOptions, cut: usize) -> (Vec<(usize, usize)>, Vec<(usize, usize)>) {
    // No limit: the replay starts at the oldest held record, nothing is copied.
    across_a_crash_with_a_state_copy(l, r, order, options, cut, usize::MAX)
}

/// As [`across_a_crash`], but the crash replays at most `limit` records: the
/// held records older than that are restored from a copy (the join stage's
/// state topic) before the replay, in their original order.
pub fn across_a_crash_with_a_state_copy(
    l: &[Time],
    r: &[Time],
    order: &[(Side, usize)],
    options: &PairingOptions,
    cut: usize,
    limit: usize,
) -> (Vec<(usize, usize)>, Vec<(usize, usize)>) {
    let time = |(s, i): (Side, usize)| if s == Side::Left { l[i] } else { r[i] };
    let mut whole: KeyState<(Side, usize)> = KeyState::default();
    let mut all = Vec::new();
    let mut replay_from = cut as u64;
    let mut copy: Vec<(u64, (Side, usize))> = Vec::new();
    for (seq, &(side, i)) in order.iter().enumerate() {
        if seq == cut {
            let oldest = whole.min_seq().unwrap_or(seq as u64);
            replay_from = oldest.max(cut.saturating_sub(limit) as u64);
            copy = whole.held().filter(|h| h.2 < replay_from).map(|h| (h.2, *h.3)).collect();
            copy.sort_by_key(|c| c.0);
        }
        whole
            .push(side, time((side, i)), seq as u64, (side, i), options, &mut |p| all.push((p.left.1, p.right.1, p.trigger)))
            .expect("the uninterrupted run accepts every record");
    }
    let mut emitted: Vec<(usize, usize)> = all.iter().filter(|p| (p.2 as usize) < cut).map(|p| (p.0, p.1)).collect();
    let mut rebuilt: KeyState<(Side, usize)> = KeyState::default();
    let replay = order.iter().enumerate().skip(replay_from as usize).map(|(seq, &rec)| (seq as u64, rec));
    for (seq, (side, i)) in copy.into_iter().chain(replay) {
        rebuilt
            .push(side, time((side, i)), seq, (side, i), options, &mut |p| {
                if p.trigger as usize >= cut {
                    emitted.push((p.left.1, p.right.1));
                }
            })
            .expect("a replay accepts what the uninterrupted run accepted");
    }
    let mut want: Vec<(usize, usize)> = all.iter().map(|p| (p.0, p.1)).collect();
    want.sort();
    emitted.sort();
    (emitted, want)
}
