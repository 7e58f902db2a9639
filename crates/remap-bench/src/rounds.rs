//! Interleaved repetitions: every figure of a section gets one repetition per round, in an order
//! that is reversed every other round.
//!
//! Running all the repetitions of one method and then all of the next compares moments, not
//! methods: this VM's speed drifts over seconds (another guest, DAMON paging cold memory out,
//! khugepaged), and a fault row's thread placement is decided afresh by each repetition's new
//! threads. With rounds, the methods compared by a ratio run next to each other in every round,
//! and whichever runs first in one round runs last in the next, so a drift or a position in the
//! sequence weighs on both sides of the ratio alike.
//!
//! The warm-up repetitions are the first rounds: a figure's warm-up no longer runs right before
//! its own measured repetitions, with every other figure in between. That is intended: what a
//! warm-up settles here is process-wide (the allocator, the page cache of the binary, THP
//! availability), not per figure, and every repetition maps its own regions afresh.

/// The repetitions of one figure, taken one per round ([`interleave`]).
pub(crate) trait Series {
    /// Runs repetition `rep` (the first `warmup` of them are not recorded), unless an earlier
    /// one failed.
    fn repetition(&mut self, rep: u32);

    /// A short description for the progress bar.
    fn label(&self) -> String;
}

/// The order of the `n` figures in round `round`: forward in even rounds, backward in odd ones.
pub(crate) fn order(round: u32, n: usize) -> impl Iterator<Item = usize> {
    let backward = round % 2 == 1;
    (0..n).map(move |i| if backward { n - 1 - i } else { i })
}

/// Runs `rounds` rounds over `series`, one repetition of each per round (see [`order`]), and
/// calls `tick` with each figure's label before its repetition.
pub(crate) fn interleave<S: Series>(series: &mut [S], rounds: u32, tick: &mut dyn FnMut(String)) {
    for round in 0..rounds {
        for i in order(round, series.len()) {
            tick(series[i].label());
            series[i].repetition(round);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Log<'a> {
        id: usize,
        log: &'a std::cell::RefCell<Vec<(usize, u32)>>,
    }

    impl Series for Log<'_> {
        fn repetition(&mut self, rep: u32) {
            self.log.borrow_mut().push((self.id, rep));
        }
        fn label(&self) -> String {
            format!("figure {}", self.id)
        }
    }

    #[test]
    fn every_figure_gets_one_repetition_per_round_in_alternating_order() {
        let log = std::cell::RefCell::new(Vec::new());
        let mut series: Vec<Log<'_>> = (0..3).map(|id| Log { id, log: &log }).collect();
        let mut labels = Vec::new();
        interleave(&mut series, 3, &mut |l| labels.push(l));
        assert_eq!(
            *log.borrow(),
            [
                (0, 0),
                (1, 0),
                (2, 0),
                (2, 1),
                (1, 1),
                (0, 1),
                (0, 2),
                (1, 2),
                (2, 2)
            ]
        );
        assert_eq!(labels.len(), 9);
        assert_eq!(labels[3], "figure 2");
    }

    #[test]
    fn one_figure_and_no_figures_are_fine() {
        assert_eq!(order(1, 1).collect::<Vec<_>>(), [0]);
        assert_eq!(order(0, 0).count(), 0);
    }
}
