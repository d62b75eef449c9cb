//! How large one event may be (CONTRACT.md "Events": a large upload or deletion is split
//! into events of at most 1,000 devices each). Every service that publishes a list of
//! devices (device-service's uploads and deletions, msp-link-service's moves) splits it
//! by this one number, and numbers the parts from 1 to [`part_count`].

/// Most devices one event names.
pub const EVENT_PART_SIZE: usize = 1000;

/// How many events `devices` devices take: `devices / EVENT_PART_SIZE`, rounded up (0 for
/// none).
pub fn part_count(devices: usize) -> usize {
    devices.div_ceil(EVENT_PART_SIZE)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_hold_at_most_a_thousand_devices() {
        assert_eq!(part_count(0), 0);
        assert_eq!(part_count(1), 1);
        assert_eq!(part_count(1000), 1);
        assert_eq!(part_count(1001), 2);
        assert_eq!(part_count(2500), 3);
    }
}
