"""oslo.utils' format inspector on image files, as JSON Lines.

Usage: python oslo_inspect.py < cases.jsonl > verdicts.jsonl

Each input line is {"id": ..., "path": ...}. Each output line, in the same
order, is what oslo.utils (imageutils.format_inspector) says about the file,
the way Nova (nova.virt.images.do_image_deep_inspection), Glance's image
conversion (glance.async_.flows.plugins.image_conversion._inspect_path) and
Cinder call it: detect_file_format(path), then safety_check() on the
inspector it returns.

  id, path        copied from the input
  format          the inspector's NAME detect_file_format returned, or null
                  when it raised
  formats         every format that matched the whole file (InspectWrapper
                  read to the end, as Glance's upload path does), raw alone
                  when nothing specific matched
  virtual_size    the virtual_size of the inspector named `format`, after the
                  whole file was read (what Glance's upload stores; raw, gpt
                  and luks count the bytes read, so a partial read would give
                  a wrong number)
  safe            true when detect_file_format and safety_check raised
                  nothing (Nova, Glance and Cinder accept the bytes)
  failures        {check name: message} from SafetyCheckFailed
  error           "ImageFormatError: ..." or "<Type>: ..." when detection or
                  the safety check raised something else (refused)
  formats_error   "<Type>: ..." when the whole-file read raised (then
                  formats is empty); the verdict above does not depend on it

Nothing is stubbed: the module is used as shipped. Logging is silenced.
Only the standard library and oslo.utils are imported.
"""

import json
import logging
import sys

from oslo_utils.imageutils import format_inspector as fi


def full_read(path):
    """InspectWrapper over the whole file: {name: inspector} of matches."""
    with open(path, 'rb') as f:
        wrapper = fi.InspectWrapper(f)
        try:
            while wrapper.read(65536):
                pass
        finally:
            wrapper.close()
        try:
            matches = wrapper.formats or []
        except fi.ImageFormatError:
            matches = []
        return {str(i): i for i in matches}, wrapper


def inspect(path):
    out = {
        'format': None,
        'formats': [],
        'virtual_size': None,
        'safe': False,
        'failures': {},
        'error': None,
    }
    wrapper = None
    try:
        matches, wrapper = full_read(path)
        out['formats'] = sorted(matches)
    except Exception as e:  # noqa: BLE001 - reported, never hidden
        # The whole-file read (64 KiB chunks) can raise where detection
        # (4 KiB chunks) does not, or the other way round: its failure is
        # kept apart from the verdict.
        out['formats_error'] = f'{type(e).__name__}: {e}'
    inspector = None
    try:
        inspector = fi.detect_file_format(path)
        out['format'] = str(inspector) if inspector is not None else None
        if inspector is None:
            out['error'] = 'no format decided'
            return out
        inspector.safety_check()
        out['safe'] = True
    except fi.SafetyCheckFailed as e:
        out['failures'] = {k: str(v) for k, v in sorted(e.failures.items())}
    except fi.ImageFormatError as e:
        out['error'] = f'ImageFormatError: {e}'
    except Exception as e:  # noqa: BLE001 - Nova refuses these too
        out['error'] = f'{type(e).__name__}: {e}'
    if out['format'] is not None:
        # The same inspector after the whole stream (Glance's upload view).
        full = [
            i
            for i in (wrapper._inspectors if wrapper is not None else ())
            if i.NAME == out['format']
        ]
        try:
            size = full[0].virtual_size if full else inspector.virtual_size
        except Exception:  # noqa: BLE001 - e.g. a short VMDK header
            size = None
        out['virtual_size'] = size
    return out


def main():
    logging.disable(logging.CRITICAL)
    for line in sys.stdin:
        line = line.strip()
        if not line:
            continue
        case = json.loads(line)
        rec = {'id': case['id'], 'path': case['path']}
        rec.update(inspect(case['path']))
        sys.stdout.write(json.dumps(rec, sort_keys=True) + '\n')
        sys.stdout.flush()


if __name__ == '__main__':
    main()
