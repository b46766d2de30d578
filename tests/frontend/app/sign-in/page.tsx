import { AuthForm } from "@/components/auth-form";

export default function SignInPage() {
  return <AuthForm kind="sign-in" />;
}
