//! A table with generational ids: a `Vec` with a free list, and a
//! generation per slot so that a reused slot is never mistaken for its
//! previous owner. The reactor keeps its connections in one (token →
//! connection), the manager its workers.
//!
//! An id (index + generation, e.g. [`ConnId`]) is what the rest of the
//! program holds; looking it up after its entry was removed finds nothing,
//! even if a new entry took the same slot (and the same mio token)
//! meanwhile. Memory and loops grow with the entries live at once, never
//! with the entries ever made.

use std::fmt;
use std::marker::PhantomData;

/// An id a [`Slots`] table hands out: a slot's index and its generation.
pub trait SlotId: Copy + Eq {
    fn from_parts(index: usize, generation: u64) -> Self;
    fn index(self) -> usize;
    fn generation(self) -> u64;
}

/// Names one connection for its whole life, and no other after it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnId {
    pub index: usize,
    pub generation: u64,
}

impl SlotId for ConnId {
    fn from_parts(index: usize, generation: u64) -> ConnId {
        ConnId { index, generation }
    }
    fn index(self) -> usize {
        self.index
    }
    fn generation(self) -> u64 {
        self.generation
    }
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

/// Entries of type `T` named by ids of type `I`.
pub struct Slots<T, I: SlotId = ConnId> {
    slots: Vec<Slot<T>>,
    free: Vec<usize>,
    len: usize,
    id: PhantomData<I>,
}

impl<T, I: SlotId> Default for Slots<T, I> {
    fn default() -> Self {
        Slots {
            slots: Vec::new(),
            free: Vec::new(),
            len: 0,
            id: PhantomData,
        }
    }
}

impl<T, I: SlotId> Slots<T, I> {
    pub fn new() -> Slots<T, I> {
        Slots::default()
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Stores `value` and returns its id.
    pub fn insert(&mut self, value: T) -> I {
        self.len += 1;
        if let Some(index) = self.free.pop() {
            let slot = &mut self.slots[index];
            slot.value = Some(value);
            I::from_parts(index, slot.generation)
        } else {
            self.slots.push(Slot {
                generation: 0,
                value: Some(value),
            });
            I::from_parts(self.slots.len() - 1, 0)
        }
    }

    pub fn get(&self, id: I) -> Option<&T> {
        self.slots
            .get(id.index())
            .filter(|s| s.generation == id.generation())
            .and_then(|s| s.value.as_ref())
    }

    pub fn get_mut(&mut self, id: I) -> Option<&mut T> {
        self.slots
            .get_mut(id.index())
            .filter(|s| s.generation == id.generation())
            .and_then(|s| s.value.as_mut())
    }

    /// The live id at `index`, if any (mio events carry only the index).
    pub fn id_at(&self, index: usize) -> Option<I> {
        self.slots
            .get(index)
            .filter(|s| s.value.is_some())
            .map(|s| I::from_parts(index, s.generation))
    }

    pub fn remove(&mut self, id: I) -> Option<T> {
        let slot = self
            .slots
            .get_mut(id.index())
            .filter(|s| s.generation == id.generation())?;
        let value = slot.value.take()?;
        slot.generation += 1;
        self.free.push(id.index());
        self.len -= 1;
        Some(value)
    }

    /// Ids of every live entry.
    pub fn ids(&self) -> Vec<I> {
        self.iter().map(|(id, _)| id).collect()
    }

    /// Every live entry with its id, in slot order.
    pub fn iter(&self) -> impl Iterator<Item = (I, &T)> {
        self.slots.iter().enumerate().filter_map(|(i, s)| {
            s.value
                .as_ref()
                .map(|v| (I::from_parts(i, s.generation), v))
        })
    }

    /// Every live entry, mutably, with its id.
    pub fn iter_mut(&mut self) -> impl Iterator<Item = (I, &mut T)> {
        self.slots.iter_mut().enumerate().filter_map(|(i, s)| {
            let generation = s.generation;
            s.value.as_mut().map(|v| (I::from_parts(i, generation), v))
        })
    }

    /// Every live entry.
    pub fn values(&self) -> impl Iterator<Item = &T> {
        self.slots.iter().filter_map(|s| s.value.as_ref())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reused_slot_does_not_answer_to_the_old_id() {
        let mut slots: Slots<&str> = Slots::new();
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

    #[test]
    fn a_table_does_not_grow_with_the_entries_ever_made() {
        let mut slots: Slots<u32> = Slots::new();
        for n in 0..1000 {
            let id = slots.insert(n);
            assert_eq!(slots.remove(id), Some(n));
        }
        let kept = slots.insert(7);
        assert_eq!(slots.slots.len(), 1);
        assert_eq!(slots.iter().collect::<Vec<_>>(), vec![(kept, &7)]);
    }
}
