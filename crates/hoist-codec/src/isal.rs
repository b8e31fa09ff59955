//! The one place hoist calls C: ISA-L's igzip deflate, for one block.
#![allow(unsafe_code)]

use std::io;

use isal_sys::igzip_lib as ffi;

/// Raw deflate of `data` primed with `dict` into `out`: sync-flushed, or
/// final if `last`. `level` is 1 to 3, ISA-L's own scale.
pub(crate) fn deflate(level: u32, dict: &[u8], data: &[u8], last: bool, out: &mut Vec<u8>) -> io::Result<()> {
    let level_buf_size = match level {
        1 => ffi::ISAL_DEF_LVL1_DEFAULT,
        2 => ffi::ISAL_DEF_LVL2_DEFAULT,
        _ => ffi::ISAL_DEF_LVL3_DEFAULT,
    };
    let mut level_buf = vec![0u8; level_buf_size as usize];
    let too_big = || io::Error::other("a compression block over 4 GiB");
    // SAFETY: isal_zstream is a plain C struct for which all-zero bytes are a
    // valid (if uninitialised) value; isal_deflate_init sets it up.
    let mut stream: Box<ffi::isal_zstream> = Box::new(unsafe { std::mem::zeroed() });
    // SAFETY: `stream` is a valid, exclusively borrowed isal_zstream.
    unsafe { ffi::isal_deflate_init(&raw mut *stream) };
    stream.level = level.min(3);
    stream.level_buf = level_buf.as_mut_ptr();
    stream.level_buf_size = level_buf_size;
    stream.gzip_flag = ffi::IGZIP_DEFLATE as u16;
    if !dict.is_empty() {
        let dict_len = u32::try_from(dict.len()).map_err(|_| too_big())?;
        // SAFETY: ISA-L copies the dictionary and never writes through the
        // pointer, whatever its signature says.
        let status = unsafe { ffi::isal_deflate_set_dict(&raw mut *stream, dict.as_ptr().cast_mut(), dict_len) };
        check(status)?;
    }
    stream.end_of_stream = u16::from(last);
    stream.flush = if last { ffi::NO_FLUSH } else { ffi::SYNC_FLUSH } as u16;
    stream.next_in = data.as_ptr().cast_mut();
    stream.avail_in = u32::try_from(data.len()).map_err(|_| too_big())?;
    loop {
        if out.capacity() - out.len() < 1024 {
            out.reserve(64 * 1024);
        }
        let spare = out.spare_capacity_mut();
        let room = u32::try_from(spare.len()).unwrap_or(u32::MAX);
        stream.next_out = spare.as_mut_ptr().cast();
        stream.avail_out = room;
        // SAFETY: next_in/avail_in describe `data` and next_out/avail_out the
        // spare capacity of `out`, both alive and unaliased for this call;
        // level_buf outlives the stream.
        check(unsafe { ffi::isal_deflate(&raw mut *stream) })?;
        let written = (room - stream.avail_out) as usize;
        // SAFETY: ISA-L initialised exactly `written` bytes of the spare capacity.
        unsafe { out.set_len(out.len() + written) };
        let finished = if last {
            stream.internal_state.state == ffi::isal_zstate_state_ZSTATE_END
        } else {
            // A sync flush is complete once all input is taken and the
            // output did not fill: ISA-L stopped for want of input.
            stream.avail_in == 0 && stream.avail_out > 0
        };
        if finished {
            return Ok(());
        }
    }
}

fn check(status: std::os::raw::c_int) -> io::Result<()> {
    if i64::from(status) == i64::from(ffi::COMP_OK) {
        Ok(())
    } else {
        Err(io::Error::other(format!("ISA-L deflate failed with status {status}")))
    }
}
