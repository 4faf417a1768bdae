// The stream's signing keys: one ed25519 key per TUF role (root, targets, snapshot, timestamp),
// each a PKCS#8 PEM file in the key directory, which never goes in the served tree. A key's
// TUF id is the SHA-256 of the canonical JSON of its public form, as the TUF specification says.
import {
  createHash,
  createPrivateKey,
  createPublicKey,
  generateKeyPairSync,
  type KeyObject,
  sign,
} from "node:crypto";
import { chmodSync, existsSync, mkdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { canonicalize } from "@tufjs/canonical-json";
import { Key, Signature } from "@tufjs/models";
import { UserError } from "../errors.js";
import { writeFileAtomic } from "../files.js";

/** ROLES are TUF's top-level roles, each with a key of its own. */
export const ROLES = ["root", "targets", "snapshot", "timestamp"] as const;
export type Role = (typeof ROLES)[number];

/** RoleKey is a role's private key and its public TUF form. */
export interface RoleKey {
  role: Role;
  private: KeyObject;
  public: Key;
}

/** publicKey is the TUF form of an ed25519 public key (raw bytes as hex), with its id. */
export function publicKey(pub: KeyObject): Key {
  const raw = pub.export({ format: "der", type: "spki" }).subarray(-32);
  const body = { keytype: "ed25519", scheme: "ed25519", keyval: { public: raw.toString("hex") } };
  const keyID = createHash("sha256").update(canonicalize(body)).digest("hex");
  return new Key({ keyID, keyType: "ed25519", scheme: "ed25519", keyVal: body.keyval });
}

/** keyPath is where a role's private key lives in the key directory. */
export function keyPath(keyDir: string, role: Role): string {
  return join(keyDir, `${role}.pem`);
}

/** ensureKeys makes the keys a key directory lacks (mode 0600) and returns all four. */
export function ensureKeys(keyDir: string): RoleKey[] {
  mkdirSync(keyDir, { recursive: true, mode: 0o700 });
  for (const role of ROLES) {
    const path = keyPath(keyDir, role);
    if (existsSync(path)) continue;
    const { privateKey } = generateKeyPairSync("ed25519");
    writeFileAtomic(path, privateKey.export({ format: "pem", type: "pkcs8" }) as string);
    chmodSync(path, 0o600);
  }
  return ROLES.map((role) => loadKey(keyDir, role));
}

/** loadKey reads one role's key, saying which file is missing or not a key. */
export function loadKey(keyDir: string, role: Role): RoleKey {
  const path = keyPath(keyDir, role);
  let text: string;
  try {
    text = readFileSync(path, "utf8");
  } catch {
    throw new UserError(
      `the ${role} key ${path} is missing: pass the --keys directory the stream was made with`,
      {
        code: "stream_keys",
      },
    );
  }
  let key: KeyObject;
  try {
    key = createPrivateKey(text);
  } catch (e) {
    throw new UserError(`${path} is not a private key: ${(e as Error).message}`, { code: "stream_keys" });
  }
  if (key.asymmetricKeyType !== "ed25519")
    throw new UserError(`${path} is a ${key.asymmetricKeyType} key; the stream's keys are ed25519`, {
      code: "stream_keys",
    });
  return { role, private: key, public: publicKey(createPublicKey(key)) };
}

/** signer signs the canonical bytes of metadata with a role's key, for Metadata.sign. */
export function signer(k: RoleKey): (data: Buffer) => Signature {
  return (data) => new Signature({ keyID: k.public.keyID, sig: sign(null, data, k.private).toString("hex") });
}
