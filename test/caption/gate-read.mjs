// Test-only preload (node --import): reading a file named gate.jpg announces itself on stderr and waits
// until the file named by CAPTIONER_TEST_GATE exists, then reads it normally. Lets a test act (close the
// reader of stdout, say) at a known point of a caption run, with lines still to be written after it.
import { existsSync, promises as fs } from 'node:fs';
import * as path from 'node:path';

const readFile = fs.readFile.bind(fs);
fs.readFile = async (file, ...rest) => {
  if (path.basename(String(file)) === 'gate.jpg') {
    process.stderr.write('test: waiting at gate.jpg\n');
    await new Promise((resolve) => {
      const poll = setInterval(() => {
        if (existsSync(process.env.CAPTIONER_TEST_GATE)) {
          clearInterval(poll);
          resolve();
        }
      }, 20);
    });
  }
  return readFile(file, ...rest);
};
