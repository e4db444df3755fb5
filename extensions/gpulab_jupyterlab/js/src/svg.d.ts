// SVG files are bundled as strings by JupyterLab's builder.
declare module '*.svg' {
  const value: string;
  export default value;
}
