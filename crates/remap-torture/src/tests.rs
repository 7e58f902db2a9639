//! The command line names the enums by their `clap::ValueEnum` (feature `clap`); the replay
//! command and the reports by `name()`: the two must agree, or a printed replay command would
//! not parse.

use clap::ValueEnum;

use super::*;

#[test]
fn command_line_names_are_the_report_names() {
    for w in Walker::ALL {
        let value = w.to_possible_value().expect("every walker is a choice");
        assert_eq!(value.get_name(), w.name());
        assert_eq!(Walker::from_str(w.name(), false), Ok(w));
    }
    assert_eq!(Walker::value_variants(), Walker::ALL);
    for i in Inject::value_variants() {
        assert_eq!(Inject::from_str(i.name(), false), Ok(*i));
    }
}
