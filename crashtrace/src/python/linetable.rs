//! Line numbers from a code object's `co_linetable`, as CPython computes them, for a
//! table copied out of a process that is gone.
//!
//! Hand-written: no maintained crate decodes CPython's internal line tables; the formats
//! are specified in CPython's `Objects/lnotab_notes.txt` (3.10) and `Objects/locations.md`
//! (3.11+). Both decoders are checked against `code.co_lines()` of real interpreters.

/// The line of the instruction at `unit` (in 2-byte code units) of a code object, or None
/// where CPython has no line for it. `version` is (major, minor).
pub fn line_for(version: (u8, u8), table: &[u8], firstlineno: i32, unit: i32) -> Option<i32> {
    if version >= (3, 11) {
        location_table(table, firstlineno, unit)
    } else {
        pep626_table(table, firstlineno, unit)
    }
}

/// 3.10: pairs of (bytecode bytes: u8, line delta: i8); -128 means "no line".
fn pep626_table(table: &[u8], firstlineno: i32, unit: i32) -> Option<i32> {
    let target = unit.checked_mul(2)?;
    let mut line = firstlineno;
    let mut end = 0i32;
    for pair in table.chunks_exact(2) {
        let sdelta = pair[0] as i32;
        let ldelta = pair[1] as i8;
        let start = end;
        end = start + sdelta;
        let no_line = ldelta == -128;
        if !no_line {
            line += ldelta as i32;
        }
        if start <= target && target < end {
            return (!no_line).then_some(line);
        }
    }
    None
}

/// 3.11+: the location table. Each entry: a header byte (bit 7 set; bits 3-6 the code;
/// bits 0-2 the length in code units minus one), then the code's operand bytes.
fn location_table(table: &[u8], firstlineno: i32, unit: i32) -> Option<i32> {
    if unit < 0 {
        return Some(firstlineno);
    }
    let mut line = firstlineno;
    let mut start = 0i32;
    let mut i = 0usize;
    while i < table.len() {
        let header = table[i];
        i += 1;
        if header & 0x80 == 0 {
            // Lost sync: a table cut short or corrupt. Stop rather than guess.
            return None;
        }
        let code = (header >> 3) & 0x0f;
        let len = (header & 0x07) as i32 + 1;
        let mut has_line = true;
        match code {
            // Short forms: same line, one column byte.
            0..=9 => i += 1,
            // One-line forms: line += code - 10, two column bytes.
            10..=12 => {
                line += code as i32 - 10;
                i += 2;
            }
            // No columns: a signed line delta.
            13 => line += read_svarint(table, &mut i)?,
            // Long form: signed line delta, then end line, start and end columns.
            14 => {
                line += read_svarint(table, &mut i)?;
                for _ in 0..3 {
                    read_varint(table, &mut i)?;
                }
            }
            // No location: this range has no line; the running line is unchanged.
            _ => has_line = false,
        }
        if start <= unit && unit < start + len {
            return has_line.then_some(line);
        }
        start += len;
    }
    None
}

/// 6 bits per byte, 0x40 continues.
fn read_varint(t: &[u8], i: &mut usize) -> Option<u32> {
    let mut v = 0u32;
    let mut shift = 0;
    loop {
        let b = *t.get(*i)?;
        *i += 1;
        v |= ((b & 0x3f) as u32).checked_shl(shift)?;
        if b & 0x40 == 0 {
            return Some(v);
        }
        shift += 6;
        if shift > 30 {
            return None;
        }
    }
}

/// Zig-zag on the low bit.
fn read_svarint(t: &[u8], i: &mut usize) -> Option<i32> {
    let v = read_varint(t, i)?;
    Some(if v & 1 != 0 {
        -((v >> 1) as i32)
    } else {
        (v >> 1) as i32
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varints() {
        let mut i = 0;
        assert_eq!(read_varint(&[0x05], &mut i), Some(5));
        let mut i = 0;
        // 0x41 = 1 with continuation, then 0x02 << 6.
        assert_eq!(read_varint(&[0x41, 0x02], &mut i), Some(1 | 2 << 6));
        let mut i = 0;
        assert_eq!(read_svarint(&[0x03], &mut i), Some(-1));
        let mut i = 0;
        assert_eq!(read_svarint(&[0x04], &mut i), Some(2));
        let mut i = 0;
        assert_eq!(read_varint(&[0x41], &mut i), None, "cut short");
    }

    #[test]
    fn location_table_by_hand() {
        // Entry 1: ONE_LINE1 (code 11), 2 units: line 10 -> 11. Entry 2: NONE (code 15),
        // 1 unit. Entry 3: NO_COLUMNS (13), delta +2, 1 unit: line 13.
        let t = [
            0x80 | 11 << 3 | 1,
            0,
            0,
            0x80 | 15 << 3,
            0x80 | 13 << 3,
            0x04,
        ];
        assert_eq!(line_for((3, 11), &t, 10, 0), Some(11));
        assert_eq!(line_for((3, 11), &t, 10, 1), Some(11));
        assert_eq!(line_for((3, 11), &t, 10, 2), None);
        assert_eq!(line_for((3, 11), &t, 10, 3), Some(13));
        assert_eq!(line_for((3, 11), &t, 10, 4), None);
        assert_eq!(line_for((3, 11), &t, 10, -1), Some(10));
    }
}
