//! A crash and a replay, as the join stage does them: what was emitted
//! before the crash stays emitted; a new engine replays from the oldest
//! record the old one still held and suppresses the pairs triggered before
//! the crash.

use millrace_join::engine::{KeyState, PairingOptions, Side, Time};

/// Runs `order` whole and with a crash before arrival `cut`; returns the
/// pairs (left, right) emitted across the crash and those of the
/// uninterrupted run, both sorted.
pub fn across_a_crash(l: &[Time], r: &[Time], order: &[(Side, usize)], options: &PairingOptions, cut: usize) -> (Vec<(usize, usize)>, Vec<(usize, usize)>) {
    let time = |(s, i): (Side, usize)| if s == Side::Left { l[i] } else { r[i] };
    let mut whole: KeyState<(Side, usize)> = KeyState::default();
    let mut all = Vec::new();
    let mut replay_from = cut as u64;
    for (seq, &(side, i)) in order.iter().enumerate() {
        if seq == cut {
            replay_from = whole.min_seq().unwrap_or(seq as u64);
        }
        whole
            .push(side, time((side, i)), seq as u64, (side, i), options, &mut |p| all.push((p.left.1, p.right.1, p.trigger)))
            .expect("the uninterrupted run accepts every record");
    }
    let mut emitted: Vec<(usize, usize)> = all.iter().filter(|p| (p.2 as usize) < cut).map(|p| (p.0, p.1)).collect();
    let mut rebuilt: KeyState<(Side, usize)> = KeyState::default();
    for (seq, &(side, i)) in order.iter().enumerate().skip(replay_from as usize) {
        rebuilt
            .push(side, time((side, i)), seq as u64, (side, i), options, &mut |p| {
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
