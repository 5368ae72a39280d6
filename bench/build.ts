import { mkdir, readdir, readFile, symlink, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import ts from 'typescript';

const projectRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');

async function tsFiles(dir: string): Promise<string[]> {
  const out: string[] = [];
  for (const e of await readdir(dir, { withFileTypes: true })) {
    const p = path.join(dir, e.name);
    if (e.isDirectory()) out.push(...(await tsFiles(p)));
    else if (e.name.endsWith('.ts') && !e.name.endsWith('.d.ts')) out.push(p);
  }
  return out;
}

/**
 * Compiles src/ and bench/ to plain JavaScript in `outDir`, file by file, so that the measured children
 * run as production does (`node dist/...`) rather than under the tsx loader, which alone adds some
 * 60 MB of RSS and its own CPU to a process. node_modules, pumps/ and public/ are linked, not copied.
 * Returns the directory holding the compiled bench scripts.
 */
export async function buildForChildren(outDir: string): Promise<string> {
  const files = [
    ...(await tsFiles(path.join(projectRoot, 'src'))),
    ...(await tsFiles(path.join(projectRoot, 'bench'))),
  ];
  await mkdir(outDir, { recursive: true });
  await writeFile(path.join(outDir, 'package.json'), '{ "type": "module" }\n');
  for (const name of ['node_modules', 'pumps', 'public']) {
    await symlink(path.join(projectRoot, name), path.join(outDir, name), 'dir').catch(
      (err: NodeJS.ErrnoException) => {
        if (err.code !== 'EEXIST' && err.code !== 'ENOENT') throw err;
      },
    );
  }
  for (const file of files) {
    const source = await readFile(file, 'utf8');
    const { outputText } = ts.transpileModule(source, {
      fileName: file,
      compilerOptions: {
        module: ts.ModuleKind.ESNext,
        target: ts.ScriptTarget.ES2022,
        verbatimModuleSyntax: true,
        sourceMap: false,
      },
    });
    const target = path.join(outDir, path.relative(projectRoot, file)).replace(/\.ts$/, '.js');
    await mkdir(path.dirname(target), { recursive: true });
    await writeFile(target, outputText);
  }
  return path.join(outDir, 'bench');
}
