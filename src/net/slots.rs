//! The token → connection table: a `Vec` with a free list, and a generation
//! per slot so that a reused slot is never mistaken for its previous owner.
//!
//! A [`ConnId`] (index + generation) is what the rest of the program holds;
//! looking it up after its connection closed finds nothing, even if a new
//! connection took the same slot (and the same mio token) meanwhile.

use std::fmt;

/// Names one connection for its whole life, and no other after it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnId {
    pub index: usize,
    pub generation: u64,
}

impl fmt::Display for ConnId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "conn {}.{}", self.index, self.generation)
    }
}

struct Slot<T> {
    generation: u64,
    value: Option<T>,
}

pub struct Slots<T> {
    slots: Vec<Slot<T>>,
    free: Vec<usize>,
    len: usize,
}

impl<T> Default for Slots<T> {
    fn default() -> Self {
        Slots {
            slots: Vec::new(),
            free: Vec::new(),
            len: 0,
        }
    }
}

impl<T> Slots<T> {
    pub fn new() -> Slots<T> {
        Slots::default()
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Stores `value` and returns its id.
    pub fn insert(&mut self, value: T) -> ConnId {
        self.len += 1;
        if let Some(index) = self.free.pop() {
            let slot = &mut self.slots[index];
            slot.value = Some(value);
            ConnId {
                index,
                generation: slot.generation,
            }
        } else {
            self.slots.push(Slot {
                generation: 0,
                value: Some(value),
            });
            ConnId {
                index: self.slots.len() - 1,
                generation: 0,
            }
        }
    }

    pub fn get(&self, id: ConnId) -> Option<&T> {
        self.slots
            .get(id.index)
            .filter(|s| s.generation == id.generation)
            .and_then(|s| s.value.as_ref())
    }

    pub fn get_mut(&mut self, id: ConnId) -> Option<&mut T> {
        self.slots
            .get_mut(id.index)
            .filter(|s| s.generation == id.generation)
            .and_then(|s| s.value.as_mut())
    }

    /// The live id at `index`, if any (mio events carry only the index).
    pub fn id_at(&self, index: usize) -> Option<ConnId> {
        self.slots
            .get(index)
            .filter(|s| s.value.is_some())
            .map(|s| ConnId {
                index,
                generation: s.generation,
            })
    }

    pub fn remove(&mut self, id: ConnId) -> Option<T> {
        let slot = self
            .slots
            .get_mut(id.index)
            .filter(|s| s.generation == id.generation)?;
        let value = slot.value.take()?;
        slot.generation += 1;
        self.free.push(id.index);
        self.len -= 1;
        Some(value)
    }

    /// Ids of every live entry.
    pub fn ids(&self) -> Vec<ConnId> {
        (0..self.slots.len())
            .filter_map(|i| self.id_at(i))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reused_slot_does_not_answer_to_the_old_id() {
        let mut slots = Slots::new();
        let a = slots.insert("a");
        assert_eq!(slots.remove(a), Some("a"));
        let b = slots.insert("b");
        assert_eq!(a.index, b.index);
        assert_ne!(a, b);
        assert_eq!(slots.get(a), None);
        assert_eq!(slots.get(b), Some(&"b"));
        assert_eq!(slots.remove(a), None);
        assert_eq!(slots.len(), 1);
    }
}
