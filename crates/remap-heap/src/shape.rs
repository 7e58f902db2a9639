//! Shapes: the layout of each kind of object, kept in a side table outside the heap.
//!
//! Every object starts with a two-word header (see [`crate::object`]); the header names the
//! object's [`ShapeId`] and its size. The shape says how many of the fields after the header are
//! references (they come first) and what shape each reference must point at, so the compactor can
//! find and rewrite the references of any object, and the verifier can check them, without
//! anything of the object model stored in the heap itself.

use std::fmt;

/// The index of a [`Shape`] in a [`ShapeTable`], as stored in object headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ShapeId(pub u32);

impl fmt::Display for ShapeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "shape {}", self.0)
    }
}

/// How many data words an object of a shape carries after its references.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DataWords {
    /// Always exactly this many.
    Fixed(u32),
    /// Any number from this minimum up; the header's size says how many.
    AtLeast(u32),
}

/// The layout of one kind of object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shape {
    /// A name for messages ("tree-node", "kv-entry").
    pub name: &'static str,
    /// The reference fields, in order: each must be null or point at an object of the given
    /// shape (`None`: any shape).
    pub refs: Vec<Option<ShapeId>>,
    /// The data words after the references.
    pub data: DataWords,
}

impl Shape {
    /// The number of reference fields.
    pub fn ref_count(&self) -> usize {
        self.refs.len()
    }

    /// The size in words (header included, rounded up to an even number of words) of an object
    /// of this shape with `data` data words.
    pub fn size_for(&self, data: usize) -> usize {
        (crate::object::HEADER_WORDS + self.refs.len() + data).next_multiple_of(2)
    }

    /// Whether an object of this shape may be `size_words` long (header included).
    pub fn allows_size(&self, size_words: usize) -> bool {
        let fixed = crate::object::HEADER_WORDS + self.refs.len();
        if size_words % 2 != 0 || size_words > crate::object::MAX_OBJECT_WORDS {
            return false;
        }
        match self.data {
            DataWords::Fixed(n) => size_words == self.size_for(n as usize),
            DataWords::AtLeast(n) => size_words >= fixed + n as usize,
        }
    }
}

/// The shape of the filler objects that pad the unused tail of a thread's allocation buffer, so
/// that the heap can always be walked object by object. Always [`ShapeId`] 0.
pub const FILLER: ShapeId = ShapeId(0);

/// The side table of shapes, indexed by [`ShapeId`]. Built once, before the heap, and shared
/// read-only by mutators, the marker, the compactor and the verifier.
#[derive(Debug, Clone)]
pub struct ShapeTable {
    shapes: Vec<Shape>,
}

impl Default for ShapeTable {
    fn default() -> Self {
        Self::new()
    }
}

impl ShapeTable {
    /// A table holding only the [`FILLER`] shape.
    pub fn new() -> Self {
        ShapeTable {
            shapes: vec![Shape {
                name: "filler",
                refs: Vec::new(),
                data: DataWords::AtLeast(0),
            }],
        }
    }

    /// Adds a shape and returns its id.
    ///
    /// ```
    /// use remap_heap::shape::{DataWords, Shape, ShapeTable};
    ///
    /// let mut shapes = ShapeTable::new();
    /// let node = shapes.next_id();
    /// let id = shapes.add(Shape { name: "node", refs: vec![Some(node), Some(node)], data: DataWords::Fixed(1) });
    /// assert_eq!(id, node);
    /// assert_eq!(shapes.get(id).unwrap().ref_count(), 2);
    /// ```
    pub fn add(&mut self, shape: Shape) -> ShapeId {
        let id = self.next_id();
        self.shapes.push(shape);
        id
    }

    /// The id the next [`add`](Self::add) returns (for shapes that refer to themselves).
    pub fn next_id(&self) -> ShapeId {
        ShapeId(u32::try_from(self.shapes.len()).expect("fewer than 2^32 shapes"))
    }

    /// The shape `id`, if the table has it.
    #[inline]
    pub fn get(&self, id: ShapeId) -> Option<&Shape> {
        self.shapes.get(id.0 as usize)
    }

    /// The number of shapes.
    pub fn len(&self) -> usize {
        self.shapes.len()
    }

    /// Whether the table has no shapes (never: the filler is always there).
    pub fn is_empty(&self) -> bool {
        self.shapes.is_empty()
    }
}
