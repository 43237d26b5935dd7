// util.mjs - small helpers shared by the devchain modules.

import fs from "node:fs";
import path from "node:path";

/**
 * Writes `value` as JSON to `file` through a temporary file in the same directory and a rename,
 * so a reader sees either the old file or the complete new one, never a partial write.
 * The file is created mode 0600: devchain files hold (test) private keys.
 */
export function writeJsonAtomic(file, value) {
    const tmp = path.join(path.dirname(file), `.${path.basename(file)}.${process.pid}.tmp`);
    fs.writeFileSync(tmp, JSON.stringify(value, null, 2) + "\n", { mode: 0o600 });
    fs.renameSync(tmp, file);
}
