//! Decoding of raw `uffd_msg`s.

use super::*;

fn msg(event: u8, arg: [u64; 3]) -> sys::uffd_msg {
    sys::uffd_msg {
        event,
        arg,
        ..Default::default()
    }
}

#[test]
fn decodes_each_event_kind() {
    let mut buf = EventBuffer::new(8);
    let ptid_word = u64::from_ne_bytes([7, 0, 0, 0, 0, 0, 0, 0]);
    buf.load(
        &[
            msg(sys::UFFD_EVENT_PAGEFAULT, [1, 0x7000, ptid_word]),
            msg(sys::UFFD_EVENT_REMAP, [0x1000, 0x2000, 0x3000]),
            msg(sys::UFFD_EVENT_REMOVE, [0x4000, 0x5000, 0]),
            msg(sys::UFFD_EVENT_UNMAP, [0x6000, 0x8000, 0]),
            msg(0x99, [0, 0, 0]),
        ],
        true,
    );
    let events: Vec<Event> = buf.drain().collect();
    assert!(matches!(
        events[0],
        Event::Pagefault(Pagefault {
            address: 0x7000,
            flags: PagefaultFlags::WRITE,
            thread_id: Some(7)
        })
    ));
    assert!(matches!(
        events[1],
        Event::Remap {
            from: 0x1000,
            to: 0x2000,
            len: 0x3000
        }
    ));
    assert!(matches!(
        events[2],
        Event::Remove {
            start: 0x4000,
            end: 0x5000
        }
    ));
    assert!(matches!(
        events[3],
        Event::Unmap {
            start: 0x6000,
            end: 0x8000
        }
    ));
    assert!(matches!(events[4], Event::Unknown { msg } if msg.event == 0x99));
    assert_eq!(buf.remaining(), 0);
}

#[test]
fn thread_id_only_when_negotiated() {
    let mut buf = EventBuffer::new(1);
    buf.load(&[msg(sys::UFFD_EVENT_PAGEFAULT, [0, 0x1000, 5])], false);
    assert!(matches!(
        buf.next_event(),
        Some(Event::Pagefault(Pagefault {
            thread_id: None,
            ..
        }))
    ));
}

#[test]
fn loaded_fork_message_owns_no_fd() {
    // A fork message that did not come from the kernel names an fd this process may not own (here
    // 0, stdin): decoding it must not claim that fd, or dropping the event would close it.
    let mut buf = EventBuffer::new(1);
    buf.load(&[msg(sys::UFFD_EVENT_FORK, [0, 0, 0])], false);
    match buf.next_event() {
        Some(Event::Unknown { msg }) => assert_eq!(msg.event, sys::UFFD_EVENT_FORK),
        other => panic!("a loaded fork message decoded as {other:?}"),
    }
}
